"""The auxiliary progress plot: nnU-Net's progress.png untouched, the loss terms in progress_aux.png."""

from __future__ import annotations

import matplotlib.pyplot as plt
from nnunetv2.training.logging.nnunet_logger import LocalLogger

from nnunet_aux.training.progress import AuxLocalLogger


def _log_epochs(logger: LocalLogger, epochs: int, aux: bool) -> None:
    if aux:
        logger.add_keys(["train_loss_main", "val_loss_main", "train_loss_scale_small", "val_loss_scale_small"])
    for epoch in range(epochs):
        for key, value in (("mean_fg_dice", 0.5), ("ema_fg_dice", 0.5), ("dice_per_class_or_region", [0.5]),
                           ("train_losses", -0.5), ("val_losses", -0.4), ("lrs", 0.01),
                           ("epoch_start_timestamps", 10.0 * epoch), ("epoch_end_timestamps", 10.0 * epoch + 9)):
            logger.log(key, value, epoch)
        if aux:
            for key in logger.aux_keys():
                logger.log(key, 1.0 / (epoch + 1), epoch)


def test_progress_png_is_nnunets_and_the_loss_terms_get_their_own_file(tmp_path):
    stock, ours = tmp_path / "stock", tmp_path / "ours"
    stock.mkdir(), ours.mkdir()
    reference = LocalLogger()
    _log_epochs(reference, 3, aux=False)
    reference.plot_progress_png(str(stock))
    logger = AuxLocalLogger()
    _log_epochs(logger, 3, aux=True)
    logger.plot_progress_png(str(ours))
    # nnU-Net's image exactly as nnU-Net draws it (same size), the loss terms beside it
    assert plt.imread(ours / "progress.png").shape == plt.imread(stock / "progress.png").shape
    aux = plt.imread(ours / AuxLocalLogger.AUX_PROGRESS_FILE)
    assert aux.ndim == 3 and aux.shape[0] < aux.shape[1]
    assert aux[..., :3].std() > 0.05  # not a blank image: lines and a legend were drawn


def test_no_aux_terms_no_aux_file(tmp_path):
    logger = AuxLocalLogger()
    _log_epochs(logger, 2, aux=False)
    logger.plot_progress_png(str(tmp_path))
    assert (tmp_path / "progress.png").is_file()
    assert not (tmp_path / AuxLocalLogger.AUX_PROGRESS_FILE).exists()
