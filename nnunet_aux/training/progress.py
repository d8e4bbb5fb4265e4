"""nnU-Net's progress logger with the auxiliary loss terms added."""

from __future__ import annotations

import os
from typing import Iterable

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402


class AuxLocalLogger(LocalLogger):
    """``LocalLogger`` that also keeps one value per epoch for each auxiliary loss term.

    nnU-Net's ``progress.png`` is left as nnU-Net draws it; the main and auxiliary loss terms
    (unweighted; train solid, validation dashed) go to ``progress_aux.png`` beside it, redrawn
    every epoch like nnU-Net's.
    """

    #: the auxiliary loss terms' plot, beside nnU-Net's ``progress.png``
    AUX_PROGRESS_FILE = "progress_aux.png"

    def add_keys(self, keys: Iterable[str]) -> None:
        """Register per-epoch keys (idempotent; keeps values restored from a checkpoint)."""
        for k in keys:
            self.my_fantastic_logging.setdefault(k, [])

    def aux_keys(self):
        return [k for k in self.my_fantastic_logging if k.startswith(("train_loss_", "val_loss_"))]

    def plot_progress_png(self, output_folder: str) -> None:
        super().plot_progress_png(output_folder)
        self.plot_aux_progress_png(output_folder)

    def plot_aux_progress_png(self, output_folder: str) -> None:
        """Draw ``progress_aux.png``: one line per loss term and split, against the epoch.

        A file of its own, not a fourth panel stacked under nnU-Net's image: reading and
        re-encoding nnU-Net's 3000 x 5400 pixel PNG after every epoch cost 2.7 s against
        nnU-Net's own 0.7 s on a 2-core CPU, more than a stock epoch of a small plan on a GPU
        (``benchmarks/bench_progress_plot.py``; now 0.8 s).
        """
        keys = [k for k in self.aux_keys() if len(self.my_fantastic_logging[k]) > 0]
        if not keys:
            return
        fig, ax = plt.subplots(1, 1, figsize=(20, 9))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        terms = sorted({k.split("_loss_", 1)[1] for k in keys})
        for i, term in enumerate(terms):
            c = colours[i % len(colours)]
            for split, ls in (("train", "-"), ("val", "--")):
                values = self.my_fantastic_logging.get(f"{split}_loss_{term}", [])
                if values:
                    ax.plot(range(len(values)), values, color=c, ls=ls, label=f"{split} {term}", linewidth=2)
        ax.set_xlabel("epoch", fontsize=20)
        ax.set_ylabel("loss term (unweighted)", fontsize=20)
        ax.tick_params(labelsize=16)
        ax.legend(loc="upper right", fontsize=16, ncol=2)
        fig.tight_layout()
        fig.savefig(os.path.join(output_folder, self.AUX_PROGRESS_FILE))
        plt.close(fig)
