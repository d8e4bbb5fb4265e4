"""Per-epoch cost of the progress plots: ours (nnU-Net's progress.png + progress_aux.png) vs stock's.

nnU-Net redraws ``progress.png`` after every epoch; the auxiliary trainers also draw their loss
terms. Both run between epochs, outside the training phase, but on a GPU an epoch of a small plan
lasts about a second, so a plot that costs seconds is a large part of the wall time. This times
``plot_progress_png`` of nnU-Net's ``LocalLogger`` and of :class:`AuxLocalLogger` on the same
logged history (``--epochs`` epochs; a scale trainer's 5 loss terms, train and validation), each
``--repeats`` times in alternation, and prints the median of each and the ratio.

    python benchmarks/bench_progress_plot.py --epochs 1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402

from nnunet_aux.training.progress import AuxLocalLogger  # noqa: E402

TERMS = ("main", "scale_small", "scale_medium", "scale_large", "contrastive")


def logged(logger: LocalLogger, epochs: int, aux: bool) -> LocalLogger:
    if aux:
        logger.add_keys([f"{split}_loss_{term}" for term in TERMS for split in ("train", "val")])
    for epoch in range(epochs):
        for key, value in (("mean_fg_dice", 0.5 + epoch / (3 * epochs)), ("ema_fg_dice", 0.5), ("lrs", 0.01),
                           ("dice_per_class_or_region", [0.5]), ("train_losses", -epoch / epochs),
                           ("val_losses", -0.9 * epoch / epochs), ("epoch_start_timestamps", 10.0 * epoch),
                           ("epoch_end_timestamps", 10.0 * epoch + 9)):
            logger.log(key, value, epoch)
        for key in (logger.aux_keys() if aux else []):
            logger.log(key, 1.0 / (epoch + 1), epoch)
    return logger


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=positive_int, default=1000, help="logged epochs (default 1000, nnU-Net's)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed plots of each logger (default 5)")
    args = p.parse_args(argv)
    loggers = {"stock": logged(LocalLogger(), args.epochs, aux=False),
               "ours": logged(AuxLocalLogger(), args.epochs, aux=True)}
    seconds: dict[str, list[float]] = {name: [] for name in loggers}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for name, logger in loggers.items():
                start = time.perf_counter()
                logger.plot_progress_png(folder)
                seconds[name].append(time.perf_counter() - start)
    stock, ours = (statistics.median(seconds[n]) for n in ("stock", "ours"))
    print(f"progress plot after an epoch, {args.epochs} epochs logged (median of {args.repeats}): "
          f"stock {stock:.2f} s, ours {ours:.2f} s, ratio {ours / stock:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
