"""Self-supervised pretraining of nnU-Net's U-Net with CLEF, for fine-tuning with stock nnU-Net.

The trainer trains the U-Net that the plan describes (the one fine-tuning builds) and
writes an ordinary nnU-Net checkpoint: ``network_weights`` are the U-Net's own, the CLEF
heads lie under ``aux_state``, so ``nnUNetv2_train TARGET CONFIG FOLD -pretrained_weights
checkpoint_final.pth`` loads it for stock ``nnUNetTrainer`` and every trainer of this
package (nnU-Net skips the segmentation layers).
"""

from __future__ import annotations

import math
from time import time
from typing import List

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from torch import nn

from ..heads import encoder_spec, unwrap_network
from .base import nnUNetTrainerAux
from .task import AuxBatch
from .tasks import CLEFTask, CLEFTrainingModel
from .variants import add_variants

__all__ = ["nnUNetTrainerCLEFPretrain"]


class nnUNetTrainerCLEFPretrain(nnUNetTrainerAux):
    """CLEF pretraining: ``L = w_dec L_dec + w_d L_d + w_e L_e``, no segmentation loss.

    Each step runs the U-Net on the patch ``X`` and on ``T(X)``, ``T`` a random affine
    (rotation up to 30 degrees in a random plane, magnification 1 to 1.5, shift up to
    0.1), and trains it with CLEF's decoding, discriminativeness (Eq. 1) and equivariance
    (Eq. 2) losses on the features of a head on the last decoder stage. Labels are never
    used (any nnU-Net dataset works; ``nnunet_aux images-only`` makes one from unlabelled
    images); the segmentation layers stay untouched.

    Everything else is nnU-Net's: patches, augmentation, SGD with the poly schedule,
    epochs. (The paper trains with Adam at 4e-4 on whole 192^3 volumes without
    augmentation; here the pretraining runs exactly as the fine-tuning will, on nnU-Net's
    patches.) Validation iterations log the same loss terms; there is no Dice, so
    ``checkpoint_best.pth`` is the epoch with the lowest moving average of the validation
    loss, and nnU-Net's final validation (a segmentation of the validation cases) is
    skipped. Train with fold ``all``, as nnU-Net's pretraining documentation advises.

    Settings (attributes, set in ``__init__`` of a subclass as in nnU-Net) are printed in
    the training log and saved in the checkpoint under ``aux_state``.

    References
    ----------
    .. [1] I. Kuleshov, M. Goncharov and V. Soboleva, "CLEF: Contrastive learning of
           equivariant features in CT images", Sect. 2.2 and 3.2.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # deep supervision needs the segmentation layers, which pretraining does not train
        self.enable_deep_supervision = False
        #: weights of the decoding, discriminativeness and equivariance terms (the paper sums them: 1, 1, 1)
        self.clef_decoding_weight = 1.0
        self.clef_discriminative_weight = 1.0
        self.clef_equivariance_weight = 1.0
        #: dimension of the feature space, and width inside the heads; the paper gives neither. None: the width of
        #: the last decoder stage, which the heads read (32 in nnU-Net's default plans), so that the heads cost
        #: what that stage costs; hidden None: max(that width, feature dimension)
        self.clef_feature_dim = None
        self.clef_hidden_channels = None
        #: anchors ("a small subset") and leaves ("a large subset") drawn per patch (not given in the paper)
        self.clef_anchors = 32
        self.clef_leaves = 1024
        #: M of Eq. 1 (paper: -0.9), and the distance from which voxel pairs are compared (paper: 10 mm)
        self.clef_margin = -0.9
        self.clef_min_distance_mm = 10.0
        #: 'sum' over pairs as Eq. 1 writes it (averaged over the patches of a batch), or 'mean' over pairs
        self.clef_discriminative_reduction = "sum"
        #: the random affine T (paper, Sect. 3.2): rotation, magnification, shift (normalised coordinates)
        self.clef_max_rotation_deg = 30.0
        self.clef_scale_range = (1.0, 1.5)
        self.clef_max_shift = 0.1
        #: smoothing of the validation loss that picks checkpoint_best (nnU-Net's EMA of the pseudo Dice: 0.9)
        self.clef_best_ema_momentum = 0.9

    # ----------------------------------------------------------------- building
    def build_aux_tasks(self):
        spec = encoder_spec(self.network)
        spacing = [float(s) for s in self.configuration_manager.spacing][-spec.ndim:]
        task = CLEFTask(
            spec, self.num_input_channels, spacing, feature_dim=self.clef_feature_dim,
            hidden_channels=self.clef_hidden_channels,
            weights=(self.clef_decoding_weight, self.clef_discriminative_weight, self.clef_equivariance_weight),
            n_anchors=self.clef_anchors, n_leaves=self.clef_leaves, margin=self.clef_margin,
            min_distance_mm=self.clef_min_distance_mm, reduction=self.clef_discriminative_reduction,
            max_rotation_deg=self.clef_max_rotation_deg, scale_range=tuple(self.clef_scale_range),
            max_shift=self.clef_max_shift)
        return super().build_aux_tasks() + [task]

    def configure_optimizers(self):
        # The segmentation layers get no gradient in pretraining (fine-tuning re-initialises them). Frozen, they
        # are left out of DDP's gradient synchronisation, which would otherwise wait for them.
        for p in unwrap_network(self.network).decoder.seg_layers.parameters():
            p.requires_grad_(False)
        return super().configure_optimizers()

    def _make_training_model(self, network: nn.Module, tasks: nn.ModuleDict) -> nn.Module:
        return CLEFTrainingModel(network, tasks)

    # -------------------------------------------------------------------- steps
    def _forward_and_losses(self, data, target):
        task = self.aux_tasks[CLEFTask.name]
        transform = task.sample_transform(data)
        outputs = self.training_model(data, transform.warp(data).to(data.dtype))
        batch = AuxBatch(targets=None, valid=None, main_output=None, main_target=None, data=data)
        terms = task.compute_losses({**outputs, "transform": transform}, batch)
        weights = task.loss_weights()
        total = sum(weights[k] * v for k, v in terms.items())
        return total, terms, None, None

    def validation_step(self, batch: dict) -> dict:
        data, target = self._to_device(batch)
        with self._autocast():
            total, terms, _, _ = self._forward_and_losses(data, target)
        out = {"loss": total.detach().cpu().numpy()}
        out.update({f"loss_{k}": v.detach().float().cpu().numpy() for k, v in terms.items()})
        return out

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        loss = float(np.mean([o["loss"] for o in val_outputs])) if val_outputs else float("nan")
        loss = float(np.nanmean(self.from_all_ranks(loss)))
        # nnU-Net logs one value per epoch of each key; pretraining segments nothing, so there is no Dice
        self.logger.log("mean_fg_dice", float("nan"), self.current_epoch)
        self.logger.log("dice_per_class_or_region", [], self.current_epoch)
        self.logger.log("val_losses", loss, self.current_epoch)
        self._log_terms(val_outputs, "val")

    def validation_loss_ema(self) -> float:
        """Moving average of the validation loss up to this epoch (what picks ``checkpoint_best.pth``)."""
        ema = None
        for value in self.logger.get_value("val_losses", step=None):
            if math.isfinite(value):
                ema = value if ema is None else self.clef_best_ema_momentum * ema + \
                    (1 - self.clef_best_ema_momentum) * value
        return float("nan") if ema is None else float(ema)

    def on_epoch_end(self):
        # nnU-Net's on_epoch_end, with the best checkpoint chosen by the validation loss instead of the Dice
        self.logger.log("epoch_end_timestamps", time(), self.current_epoch)
        self._print_loss_terms()
        self.print_to_log_file("train_loss", np.round(self.logger.get_value("train_losses", step=-1), decimals=4))
        self.print_to_log_file("val_loss", np.round(self.logger.get_value("val_losses", step=-1), decimals=4))
        seconds = self.logger.get_value("epoch_end_timestamps", step=-1) - \
            self.logger.get_value("epoch_start_timestamps", step=-1)
        self.print_to_log_file(f"Epoch time: {np.round(seconds, decimals=2)} s")
        if (self.current_epoch + 1) % self.save_every == 0 and self.current_epoch != (self.num_epochs - 1):
            self.save_checkpoint(join(self.output_folder, "checkpoint_latest.pth"))
        ema = self.validation_loss_ema()
        if self._best_ema is None or ema < self._best_ema:
            self._best_ema = ema
            self.print_to_log_file(f"New best validation loss (moving average): {np.round(ema, decimals=4)}")
            self.save_checkpoint(join(self.output_folder, "checkpoint_best.pth"))
        if self.local_rank == 0:
            self.logger.plot_progress_png(self.output_folder)
        self.current_epoch += 1

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file(
            "CLEF pretraining trains no segmentation: nnU-Net's final validation is skipped. Fine-tune with "
            f"nnUNetv2_train TARGET {self.configuration_name} FOLD -pretrained_weights "
            f"{join(self.output_folder, 'checkpoint_final.pth')}", also_print_to_console=True)


add_variants(globals(), nnUNetTrainerCLEFPretrain)
