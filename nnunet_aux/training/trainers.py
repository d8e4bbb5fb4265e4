"""The concrete trainers users name with ``-tr``.

Table 1 of Sadikine et al. with stock commands, on a scale-decomposed dataset:

=====================  ==========================================================
binary baseline        ``nnUNetTrainer`` (stock)
multi-class baseline   ``nnUNetTrainer`` on the ``nnunet_aux multiclass`` variant
lambda_c = 0           ``nnUNetTrainerScaleAux``
lambda_c != 0          ``nnUNetTrainerScaleContrastive``
=====================  ==========================================================

The other auxiliary tasks, for any nnU-Net dataset, and their combinations:

=========================================  ================================================
CMU-Net (joint classification)             ``nnUNetTrainerClsAux``
CMU-Net's "pre-trained U-Net" baseline     ``nnUNetTrainerClsAuxPretrain``
voxel-level SimSiam, ``|F| = 3``           ``nnUNetTrainerVoxelSimSiam``
scale contrastive + SimSiam                ``nnUNetTrainerScaleContrastiveSimSiam``
scale contrastive + classification         ``nnUNetTrainerScaleContrastiveCls``
CLEF self-supervised pretraining            ``nnUNetTrainerCLEFPretrain`` (then fine-tune with
                                            any trainer and ``-pretrained_weights``)
=========================================  ================================================
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from torch import distributed as dist

from ..dataset_format import read_scale_spec
from ..heads import encoder_spec, unwrap_network
from .base import nnUNetTrainerAux
from .pretrain import __all__ as _PRETRAIN_TRAINERS
from .pretrain import *  # noqa: F401,F403  (nnUNetTrainerCLEFPretrain and its variants)
from .thin_structure_trainers import __all__ as _THIN_STRUCTURE_TRAINERS
from .thin_structure_trainers import *  # noqa: F401,F403  (Skeleton Recall, soft-clDice and their variants)
from .thin_structure_trainers import nnUNetTrainerSkeletonRecall
from .tasks import ClsTask, ScaleTask, SimSiamTask, default_scale_weights, presence_accuracy, presence_auroc
from .variants import make_variants


class nnUNetTrainerScaleAux(nnUNetTrainerAux):
    """Scale-specific auxiliary decoders, L = L_mt + sum_s lambda_s L_s (Sadikine et al., Eq. 5)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # fail at construction, before any work, if the dataset has no scale decomposition
        self.scale_spec = read_scale_spec(dataset_json, source=f"dataset.json of {self.plans_manager.dataset_name}")
        #: lambda_s per scale, smallest first; None = paper's (0.78, 0.48, 0.54) for 3 scales
        self.scale_loss_weights = None
        #: lambda_c (Eq. 9); 0 = no contrastive loss and no projection heads
        self.contrastive_weight = 0.0
        #: tau (Eq. 8)
        self.contrastive_temperature = 0.94
        #: anchors drawn per scale and batch (the paper does not say; bounds cost)
        self.contrastive_voxels_per_scale = 512
        #: 'random' or 'hard' (voxels the scale's own decoder misses first)
        self.contrastive_sampling = "random"
        #: proj_s widths (Eq. 6; not given in the paper)
        self.projection_dim = 64
        self.projection_hidden = None
        #: feature maps of each D_s relative to nnU-Net's decoder: 1 = the paper's full decoders
        self.scale_decoder_width = 1.0
        #: stages of each D_s, deepest first: None = all (the paper), K > 0 the first K, -1 all but the
        #: highest-resolution one (its outputs and targets then start one level lower)
        self.scale_decoder_stages = None
        #: Dice of L_s over the whole batch (True) or per patch (False); None = the plan's batch_dice
        self.scale_batch_dice = None
        #: foreground weight of L_s's cross-entropy (the paper's "weighted cross-entropy"): None = unweighted,
        #: a number, or 'balanced' = the batch's inverse foreground frequency, capped at scale_bce_max_pos_weight
        self.scale_bce_pos_weight = None
        self.scale_bce_max_pos_weight = 50.0

    def build_aux_tasks(self):
        spec = self.scale_spec
        weights = self.scale_loss_weights or default_scale_weights(len(spec.scale_labels))
        task = ScaleTask(
            encoder_spec(self.network), unwrap_network(self.network).decoder, spec.scale_labels,
            spec.scale_names, self._make_scale_loss, self.enable_deep_supervision, weights,
            contrastive_weight=self.contrastive_weight, temperature=self.contrastive_temperature,
            voxels_per_scale=self.contrastive_voxels_per_scale, sampling=self.contrastive_sampling,
            embedding_dim=self.projection_dim, projection_hidden=self.projection_hidden,
            decoder_width=self.scale_decoder_width, decoder_stages=self.scale_decoder_stages,
            loss_settings={"scale_batch_dice": self.scale_batch_dice, "scale_bce_pos_weight": self.scale_bce_pos_weight,
                           "scale_bce_max_pos_weight": self.scale_bce_max_pos_weight})
        return super().build_aux_tasks() + [task]

    def _make_scale_loss(self, levels=None):
        return self.make_region_loss(batch_dice=self.scale_batch_dice, bce_pos_weight=self.scale_bce_pos_weight,
                                     max_pos_weight=self.scale_bce_max_pos_weight, levels=levels)


class nnUNetTrainerScaleContrastive(nnUNetTrainerScaleAux):
    """Scale decoders plus the multi-scale contrastive loss (Sadikine et al., Eq. 9), lambda_c = 0.53, tau = 0.94."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.contrastive_weight = 0.53


class nnUNetTrainerScaleContrastiveHard(nnUNetTrainerScaleContrastive):
    """As ScaleContrastive, anchors drawn hardest-first."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.contrastive_sampling = "hard"


class nnUNetTrainerScaleContrastiveLite(nnUNetTrainerScaleContrastive):
    """ScaleContrastive with light scale decoders: 1/4 of the main decoder's width, no full-resolution stage.

    The paper's structure is kept (one decoder per scale on the shared encoder, skips, deep
    supervision, the contrastive loss on each D_s's deepest stage); the encoder's skips enter
    each D_s through a 1x1x1 reduction, and each D_s stops one stage before full resolution
    (its outputs and targets start at the second deep-supervision level). Step: 1.15 x stock
    on the CPU, against 3.4 x for full decoders (benchmarks/RESULTS.md). L_s's cross-entropy is
    class-balanced (the paper's "weighted cross-entropy": foreground weight = background /
    foreground voxels of the batch, up to 1000), which the rare scales need to learn at all
    (issue #10, benchmarks/RESULTS.md).
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.scale_decoder_width = 0.25
        # no full-resolution stage: on the CPU a narrow convolution there costs about what a full one
        # does, so narrowing alone left the step at 1.5 x stock (benchmarks/RESULTS.md)
        self.scale_decoder_stages = -1
        # full class balance: with a cap of 50 the small and medium decoders stayed at Dice 0 for
        # 120 iterations on the demo data (0.03 % / 0.1 % of the voxels); see benchmarks/RESULTS.md
        self.scale_bce_pos_weight = "balanced"
        self.scale_bce_max_pos_weight = 1000.0


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
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (probabilities, targets))
            probabilities = [p for g in gathered for p in g[0]]
            targets = [t for g in gathered for t in g[1]]
        probabilities, targets = np.asarray(probabilities), np.asarray(targets)
        metrics = {"val_cls_accuracy": presence_accuracy(probabilities, targets),
                   "val_cls_auroc": presence_auroc(probabilities, targets)}
        self.logger.local_logger.add_keys(list(metrics))
        for key, value in metrics.items():
            self.logger.log(key, value, self.current_epoch)
        self.print_to_log_file("presence classification (val): accuracy {:.4f}, AUROC {:.4f}".format(
            metrics["val_cls_accuracy"], metrics["val_cls_auroc"]))


class _TwoPhasePolyLRScheduler(PolyLRScheduler):
    """nnU-Net's poly learning rate, run once over the pre-training epochs and again over the rest."""

    def __init__(self, optimizer, initial_lr: float, max_steps: int, first_phase_steps: int,
                 exponent: float = 0.9):
        self.first_phase_steps = first_phase_steps  # before super().__init__, which takes a first step
        super().__init__(optimizer, initial_lr, max_steps, exponent)

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        n = self.first_phase_steps
        step, length = (current_step, n) if current_step < n else (current_step - n, self.max_steps - n)
        new_lr = self.initial_lr * (1 - step / length) ** self.exponent
        for group in self.optimizer.param_groups:
            group["lr"] = new_lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


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
            lr_scheduler = _TwoPhasePolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.pretrain_epochs,
                                                    lr_scheduler.exponent)
        return optimizer, lr_scheduler

    def on_train_epoch_start(self):
        if self.pretrain_epochs and self.current_epoch == self.pretrain_epochs:
            self.optimizer.state.clear()
            self.print_to_log_file("classification pre-training done: segmentation training starts "
                                   "(optimizer momentum reset, learning rate schedule restarted)")
        super().on_train_epoch_start()

    def _forward_and_losses(self, data, target):
        total, terms, output, main_target = super()._forward_and_losses(data, target)
        weights = {"main": 1.0}
        for task in self.aux_tasks.values():
            weights.update(task.loss_weights())
        counted = {ClsTask.name} if self.in_pretraining() else set(terms) - {ClsTask.name}
        total = sum(weights[k] * v for k, v in terms.items() if k in counted)
        if self.is_ddp:
            # DDP (find_unused_parameters=False) needs a gradient for every parameter in every step
            total = total + sum(0.0 * v for k, v in terms.items() if k not in counted)
        return total, terms, output, main_target


class nnUNetTrainerVoxelSimSiam(nnUNetTrainerAux):
    """Voxel-level SimSiam on the last three encoder stages, ``L = L_seg + lambda L_feature``.

    Projection and prediction heads (1x1x1-convolution MLPs, hidden width 64) on each of the
    ``simsiam_layers`` deepest encoder stages; the class-weighted negative cosine similarity
    between ``p`` and stop-gradient ``z`` of same-class voxels across the batch, summed over
    the layers (Eq. 7, ``w_f = 1``). At most ``simsiam_max_voxels`` voxels per layer,
    false negatives of the main output first (at most ``simsiam_max_false_negatives``).
    The loss term lies in ``[-layers, 0]``: the same-class pairs are averaged, not summed.

    References
    ----------
    .. [1] C. E. Lee, M. Chung and Y.-G. Shin, "Voxel-level Siamese representation learning
           for abdominal multi-organ segmentation", Eq. 4-8, Sect. IV-A.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        #: |F|, deepest encoder stages with a voxel-level feature layer
        self.simsiam_layers = 3
        #: lambda (Eq. 8); None = the paper's 10 for |F| = 3, 100 for |F| = 1
        self.simsiam_weight = None
        #: hidden width of the projection / prediction MLPs, and dimension of p and z (None = hidden)
        self.simsiam_hidden_dim = 64
        self.simsiam_embedding_dim = None
        #: voxels sampled per layer, and false negatives among them at most
        self.simsiam_max_voxels = 1700
        self.simsiam_max_false_negatives = 1000
        #: sample background voxels too (the paper samples foreground only)
        self.simsiam_include_background = False

    def build_aux_tasks(self):
        lm = self.label_manager
        task = SimSiamTask(encoder_spec(self.network), n_regions=len(lm.foreground_regions) if lm.has_regions else None,
                           ignore_label=None if lm.has_regions else lm.ignore_label, n_layers=self.simsiam_layers,
                           weight=self.simsiam_weight, hidden_channels=self.simsiam_hidden_dim,
                           embedding_channels=self.simsiam_embedding_dim, max_voxels=self.simsiam_max_voxels,
                           max_false_negatives=self.simsiam_max_false_negatives,
                           include_background=self.simsiam_include_background)
        return super().build_aux_tasks() + [task]


class nnUNetTrainerScaleContrastiveSimSiam(nnUNetTrainerScaleContrastive, nnUNetTrainerVoxelSimSiam):
    """Scale decoders with the scale contrastive loss, plus voxel-level SimSiam on the encoder."""


class nnUNetTrainerScaleContrastiveCls(nnUNetTrainerScaleContrastive, nnUNetTrainerClsAux):
    """Scale decoders with the scale contrastive loss, plus the CMU-Net presence classifier."""


class nnUNetTrainerScaleContrastiveSkeletonRecall(nnUNetTrainerScaleContrastive, nnUNetTrainerSkeletonRecall):
    """Scale decoders with the scale contrastive loss, plus Skeleton Recall on the main output (issue #11)."""


class nnUNetTrainerScaleContrastiveLiteSkeletonRecall(nnUNetTrainerScaleContrastiveLite, nnUNetTrainerSkeletonRecall):
    """Light scale decoders with the scale contrastive loss, plus Skeleton Recall on the main output (issue #11)."""


__all__ = ["nnUNetTrainerAux", "nnUNetTrainerScaleAux", "nnUNetTrainerScaleContrastive",
           "nnUNetTrainerScaleContrastiveHard", "nnUNetTrainerScaleContrastiveLite", "nnUNetTrainerClsAux", "nnUNetTrainerClsAuxPretrain",
           "nnUNetTrainerVoxelSimSiam", "nnUNetTrainerScaleContrastiveSimSiam", "nnUNetTrainerScaleContrastiveCls",
           "nnUNetTrainerScaleContrastiveSkeletonRecall", "nnUNetTrainerScaleContrastiveLiteSkeletonRecall",
           *_PRETRAIN_TRAINERS, *_THIN_STRUCTURE_TRAINERS]
for _base in (nnUNetTrainerScaleAux, nnUNetTrainerScaleContrastive, nnUNetTrainerScaleContrastiveHard,
              nnUNetTrainerScaleContrastiveLite,
              nnUNetTrainerClsAux, nnUNetTrainerClsAuxPretrain, nnUNetTrainerVoxelSimSiam,
              nnUNetTrainerScaleContrastiveSimSiam, nnUNetTrainerScaleContrastiveCls,
              nnUNetTrainerScaleContrastiveSkeletonRecall, nnUNetTrainerScaleContrastiveLiteSkeletonRecall):
    for _name, _cls in make_variants(_base, __name__).items():
        globals()[_name] = _cls
        __all__.append(_name)


class nnUNetTrainerClsAuxPretrain_smoke(nnUNetTrainerClsAuxPretrain):
    """Smoke test of both phases: 2 epochs (1 of pre-training) of 5 training and 2 validation iterations."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.cls_pretrain_epochs = 1
        self.num_iterations_per_epoch = 5
        self.num_val_iterations_per_epoch = 2
