"""nnU-Net's progress logger with the auxiliary loss terms added."""

from __future__ import annotations

import os
from typing import Iterable

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402


class AuxLocalLogger(LocalLogger):
    """``LocalLogger`` that also keeps one value per epoch for each auxiliary loss term.

    ``progress.png`` keeps nnU-Net's three panels and gains a fourth below them with the
    main and auxiliary loss terms (unweighted; train solid, validation dashed).
    """

    def add_keys(self, keys: Iterable[str]) -> None:
        """Register per-epoch keys (idempotent; keeps values restored from a checkpoint)."""
        for k in keys:
            self.my_fantastic_logging.setdefault(k, [])

    def aux_keys(self):
        return [k for k in self.my_fantastic_logging if k.startswith(("train_loss_", "val_loss_"))]

    def plot_progress_png(self, output_folder: str) -> None:
        super().plot_progress_png(output_folder)
        keys = [k for k in self.aux_keys() if len(self.my_fantastic_logging[k]) > 0]
        if not keys:
            return
        # nnU-Net draws a 30 x 54 inch figure; we draw a panel of the same width and stack the images.
        fig, ax = plt.subplots(1, 1, figsize=(30, 14))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        terms = sorted({k.split("_loss_", 1)[1] for k in keys})
        for i, term in enumerate(terms):
            c = colours[i % len(colours)]
            for split, ls in (("train", "-"), ("val", "--")):
                values = self.my_fantastic_logging.get(f"{split}_loss_{term}", [])
                if values:
                    ax.plot(range(len(values)), values, color=c, ls=ls, label=f"{split} {term}", linewidth=2)
        ax.set_xlabel("epoch", fontsize=25)
        ax.set_ylabel("loss term (unweighted)", fontsize=25)
        ax.tick_params(labelsize=20)
        ax.legend(loc="upper right", fontsize=20, ncol=2)
        fig.tight_layout()
        fig.canvas.draw()
        panel = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float32) / 255
        plt.close(fig)
        path = os.path.join(output_folder, "progress.png")
        main = plt.imread(path)[..., :3]
        if panel.shape[1] != main.shape[1]:  # different dpi settings: pad the narrower image
            width = max(panel.shape[1], main.shape[1])
            panel, main = (np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=1)
                           for a in (panel, main))
        plt.imsave(path, np.concatenate((main, panel), 0))
