"""CMU-Net's presence classification as an auxiliary task, trained jointly or as pre-training.

=========================================  ================================================
CMU-Net (joint classification)             ``nnUNetTrainerClsAux``
CMU-Net's "pre-trained U-Net" baseline     ``nnUNetTrainerClsAuxPretrain``
=========================================  ================================================
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from ..heads import encoder_spec
from .base import nnUNetTrainerAux
from .lr_schedule import TwoPhasePolyLRScheduler
from .tasks import ClsTask, presence_accuracy, presence_auroc
from .variants import add_variants


def presence_structures(label_manager) -> Tuple[List[str], Optional[List[int]]]:
    """Names of the structures whose presence the classification head predicts, and their labels.

    Label datasets: every foreground label (its value is returned too). Region-based
    datasets: every foreground region, in nnU-Net's region order (labels None: structure
    ``k`` is region channel ``k`` of the target).
    """
    lm = label_manager
    if lm.has_regions:
        regions = lm.foreground_regions
        names = [k for k, r in lm.label_dict.items()
                 if k != "ignore" and lm.filter_background([tuple(r) if isinstance(r, list) else r])]
        if len(names) != len(regions):  # cannot pair names with regions: name them by their labels
            names = [str(r) for r in regions]
        return names, None
    by_value = {int(v): k for k, v in lm.label_dict.items() if k != "ignore" and not isinstance(v, (list, tuple))}
    labels = [int(v) for v in lm.foreground_labels]
    return [by_value.get(v, str(v)) for v in labels], labels


class nnUNetTrainerClsAux(nnUNetTrainerAux):
    """CMU-Net: a presence classifier on the encoder bottleneck, trained jointly, focal loss.

    The head (global average pooling + one linear layer) predicts for every foreground class
    (or region) whether the patch contains it; targets come from nnU-Net's own augmented
    target. The paper's loss is ``L = w_s L_seg + w_c L_cls`` with ``w_s = w_c = 0.5``.

    How ``w_s`` is applied: nnU-Net's learning rate, schedule and gradient clipping are tuned
    for its segmentation loss at weight 1, so ``L_seg`` keeps weight 1 and the classification
    term gets ``w_c / w_s`` (1 by default). That is the paper's loss times ``1 / w_s``: the
    same balance between the tasks, the same direction of every gradient, and nnU-Net's
    loss scale (optimising the paper's loss literally would halve nnU-Net's effective
    learning rate).

    Validation also logs ``val_cls_accuracy`` and ``val_cls_auroc`` (presence predicted at
    probability 0.5; AUROC pooled over structures, NaN when every patch holds every structure).

    References
    ----------
    .. [1] A. Moseley, A. Wang and A. A. Z. Imran, "Context-aware multitasking for medical
           image segmentation" (CMU-Net), Sect. 2 and 3.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        #: w_s and w_c of the paper's loss (0.5 / 0.5); the classification term is weighted w_c / w_s
        self.cls_seg_weight = 0.5
        self.cls_weight = 0.5
        #: focal loss weight of positives (negatives: 1 - alpha); 0.8 / 0.2 was best for joint training
        self.cls_focal_alpha = 0.8
        #: focal loss gamma (not given by CMU-Net; Lin et al.'s 2)
        self.cls_focal_gamma = 2.0
        #: voxels of a structure (at patch resolution) that make it present
        self.cls_presence_threshold = 1

    def build_aux_tasks(self):
        if not self.cls_seg_weight > 0:
            raise ValueError(f"cls_seg_weight (w_s) must be positive, got {self.cls_seg_weight!r}")
        names, labels = presence_structures(self.label_manager)
        task = ClsTask(encoder_spec(self.network), names, labels, presence_threshold=self.cls_presence_threshold,
                       alpha=self.cls_focal_alpha, gamma=self.cls_focal_gamma,
                       weight=self.cls_weight / self.cls_seg_weight)
        return super().build_aux_tasks() + [task]

    def validation_step(self, batch: dict) -> dict:
        out = super().validation_step(batch)
        probabilities, targets = self.aux_tasks[ClsTask.name].last_presence
        # lists of per-sample rows: nnU-Net's collate_outputs concatenates lists
        out["cls_probabilities"] = list(probabilities.numpy())
        out["cls_targets"] = list(targets.numpy())
        return out

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        super().on_validation_epoch_end(val_outputs)
        probabilities = [p for o in val_outputs for p in o["cls_probabilities"]]
        targets = [t for o in val_outputs for t in o["cls_targets"]]
        gathered = self.from_all_ranks((probabilities, targets))
        probabilities = np.asarray([p for g in gathered for p in g[0]])
        targets = np.asarray([t for g in gathered for t in g[1]])
        metrics = {"val_cls_accuracy": presence_accuracy(probabilities, targets),
                   "val_cls_auroc": presence_auroc(probabilities, targets)}
        for key, value in metrics.items():
            self.log_epoch_value(key, value)
        self.print_to_log_file("presence classification (val): accuracy {:.4f}, AUROC {:.4f}".format(
            metrics["val_cls_accuracy"], metrics["val_cls_auroc"]))


class nnUNetTrainerClsAuxPretrain(nnUNetTrainerClsAux):
    """CMU-Net's "pre-trained U-Net" baseline: classification pre-training of the encoder, then segmentation.

    Phase 1 (the first ``cls_pretrain_epochs`` epochs, at most half of ``num_epochs``): the
    encoder and the classification head learn presence classification alone; the decoder
    gets no gradient and is not updated. Phase 2: the whole network learns segmentation
    alone (classification off, as in the paper, which adds the decoder after pre-training
    and trains on segmentation); other auxiliary tasks of a subclass stay on. Each phase runs
    nnU-Net's poly learning-rate schedule from the initial rate, and phase 2 starts with
    fresh optimizer momentum, as a new training would. Focal alpha is 0.5, the paper's best
    for pre-trained encoders. The classification loss and metrics stay logged in phase 2.

    Under DDP the unused terms enter with weight 0 (every parameter must get a gradient), so
    there the frozen decoder still feels SGD's weight decay (a factor ``1 - lr * 3e-5`` per step).
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        #: epochs of classification pre-training (the paper pre-trains for 100), counted in num_epochs
        self.cls_pretrain_epochs = 100
        self.cls_focal_alpha = 0.5

    @property
    def pretrain_epochs(self) -> int:
        """Pre-training epochs actually run: at most half of ``num_epochs``."""
        return max(0, min(int(self.cls_pretrain_epochs), self.num_epochs // 2))

    def in_pretraining(self) -> bool:
        return self.current_epoch < self.pretrain_epochs

    def configure_optimizers(self):
        optimizer, lr_scheduler = super().configure_optimizers()
        if isinstance(lr_scheduler, PolyLRScheduler):
            lr_scheduler = TwoPhasePolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.pretrain_epochs,
                                                   lr_scheduler.exponent)
        return optimizer, lr_scheduler

    def on_train_epoch_start(self):
        if self.pretrain_epochs and self.current_epoch == self.pretrain_epochs:
            self.optimizer.state.clear()
            self.print_to_log_file("classification pre-training done: segmentation training starts "
                                   "(optimizer momentum reset, learning rate schedule restarted)")
        super().on_train_epoch_start()

    def counted_loss_terms(self, terms):
        # phase 1: classification alone; phase 2: everything but classification (still logged)
        return {ClsTask.name} if self.in_pretraining() else set(terms) - {ClsTask.name}


__all__ = ["nnUNetTrainerClsAux", "nnUNetTrainerClsAuxPretrain"]
add_variants(globals(), nnUNetTrainerClsAux)
# the smoke test runs both phases: 2 epochs, the first of pre-training
add_variants(globals(), nnUNetTrainerClsAuxPretrain, smoke={"num_epochs": 2, "cls_pretrain_epochs": 1})
