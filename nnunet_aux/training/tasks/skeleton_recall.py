"""Skeleton Recall (Kirchhoff et al., ECCV 2024): recall of the main prediction on the tubed GT skeleton.

A task without parameters: it reads nnU-Net's main output and its own target channels (the
tubed skeleton of each structure, made on the CPU by
:class:`~nnunet_aux.training.skeleton_targets.SkeletonTargetTransform`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ...losses import skeleton_recall_loss
from ..skeleton_targets import PAPER_SKELETON_TARGET, PAPER_TUBE_RADIUS, SkeletonTargetTransform
from ..task import AuxBatch, AuxiliaryTask

#: Kirchhoff et al.'s loss weight (``self.weight_srec = 1`` in skeleton-recall 1.0.0,
#: skeleton_recall/training/nnUNetTrainer/nnUNetTrainerSkeletonRecall.py, line 41)
PAPER_SKELETON_RECALL_WEIGHT = 1.0
#: their smoothing term of the recall (``soft_skelrec_kwargs={..., 'smooth': 1e-5, ...}``, same file, line 49)
PAPER_SKELETON_RECALL_SMOOTH = 1e-5


def foreground_probabilities(logits: torch.Tensor, channels: Sequence[int], regions: bool) -> torch.Tensor:
    """Probabilities of the foreground structures: sigmoid of region logits, else softmax over labels.

    Parameters
    ----------
    logits : Tensor (B, K, ...)
        nnU-Net's main output.
    channels : sequence of int
        The output channel of each structure.
    regions : bool
        Region-based dataset (independent sigmoids) or label dataset (one softmax).

    Returns
    -------
    Tensor, float32, (B, len(channels), ...)

    Examples
    --------
    >>> foreground_probabilities(torch.zeros(1, 2, 3), [1], regions=False)[0, 0]
    tensor([0.5000, 0.5000, 0.5000])
    """
    logits = logits.float()
    p = torch.sigmoid(logits) if regions else torch.softmax(logits, 1)
    index = list(channels)
    return p if index == list(range(p.shape[1])) else p[:, index]


def structure_channels(label_manager) -> Tuple[Optional[List[Tuple[int, ...]]], List[int]]:
    """The structures of a dataset: label values (None for region datasets) and output channels.

    Label datasets: every foreground label (the ignore label is none), output channel = its
    index among nnU-Net's labels. Region datasets: every foreground region, channel = its index.
    """
    lm = label_manager
    if lm.has_regions:
        return None, list(range(len(lm.foreground_regions)))
    labels = [int(v) for v in lm.foreground_labels]
    return [(v,) for v in labels], [list(lm.all_labels).index(v) for v in labels]


def _levels(value, n: int) -> List[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)[:n]
    return [value] * n if value is None else [value]


class MainOutputTask(AuxiliaryTask):
    """A loss on nnU-Net's main output (no head of its own): one term ``name`` with weight ``self.weight``.

    Subclasses call :meth:`init_structures` in their ``__init__``.
    """

    def init_structures(self, channels: Sequence[int], labels: Optional[Sequence[Tuple[int, ...]]],
                        weight: float, what: str, match_labels: bool = True) -> None:
        """Set ``channels``, ``labels`` and ``weight`` after checking them; ``what`` names the loss in errors."""
        self.channels = [int(c) for c in channels]
        if not self.channels:
            raise ValueError(f"{what} needs at least one foreground structure")
        self.labels = None if labels is None else [tuple(int(v) for v in group) for group in labels]
        if match_labels and self.labels is not None and len(self.labels) != len(self.channels):
            raise ValueError(f"{len(self.labels)} label sets for {len(self.channels)} channels")
        if not weight >= 0:
            raise ValueError(f"weight must be non-negative, got {weight!r}")
        self.weight = float(weight)

    def forward(self, skips: List[torch.Tensor], main_output: Any) -> Dict[str, Any]:
        return {"logits": main_output}

    def loss_weights(self) -> Dict[str, float]:
        return {self.name: self.weight}


def check_count(name: str, value: Any) -> int:
    """``value`` if it is a non-negative int (not a bool), else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


class SkeletonRecallTask(MainOutputTask):
    """Skeleton Recall loss on nnU-Net's main output, L = L_nnU-Net + w (1 - Rec).

    Parameters
    ----------
    channels : sequence of int
        Output channel of each structure (see :func:`structure_channels`).
    labels : sequence of tuple of int, optional
        Label values of each structure (label datasets); None for region datasets, whose
        structures are nnU-Net's region channels 0..K-1 of the target.
    weight : float
        w (Kirchhoff et al.: 1).
    tube_radius : int
        Dilations of the skeleton into a tube (their code: 2).
    smooth : float
        Smoothing of the recall (their code: 1e-5).
    batch_dice : bool
        Pool the recall's sums over the batch (nnU-Net's ``batch_dice`` of the configuration, as
        in their code).
    deep_supervision_weights : sequence of float, optional
        Weight of each output level, highest resolution first; the recall is taken at the first
        ``len(weights)`` levels. skeleton-recall 1.0.0's ``nnUNetTrainerSkeletonRecallDS``: all of nnU-Net's
        weights; its ``nnUNetTrainerSkeletonRecall``: nnU-Net's first weight only (the full-resolution
        level inside nnU-Net's ``DeepSupervisionWrapper``). None: the highest resolution with weight 1
        (no deep supervision).
    target_mode : {"union", "per_structure"}
        How the skeleton targets are made (:class:`~nnunet_aux.training.skeleton_targets.SkeletonTargetTransform`).
    ddp : bool
        Pool the recall's sums over the DDP processes too (with ``batch_dice``; their ``AllGatherGrad``).

    References
    ----------
    .. [1] Y. Kirchhoff et al., "Skeleton Recall Loss for connectivity conserving and resource efficient
           segmentation of thin tubular structures", ECCV 2024, arXiv:2404.03010, Sect. 3.
    """

    name = "skeleton_recall"

    def __init__(self, channels: Sequence[int], labels: Optional[Sequence[Tuple[int, ...]]] = None,
                 weight: float = PAPER_SKELETON_RECALL_WEIGHT, tube_radius: int = PAPER_TUBE_RADIUS,
                 smooth: float = PAPER_SKELETON_RECALL_SMOOTH, batch_dice: bool = True,
                 deep_supervision_weights: Optional[Sequence[float]] = None,
                 target_mode: str = PAPER_SKELETON_TARGET, ddp: bool = False):
        super().__init__()
        self.init_structures(channels, labels, weight, "skeleton recall")
        self.tube_radius = check_count("tube_radius", tube_radius)
        self.smooth = float(smooth)
        self.batch_dice = bool(batch_dice)
        self.deep_supervision_weights = (None if deep_supervision_weights is None
                                         else [float(w) for w in deep_supervision_weights])
        self.target_mode = target_mode
        self.ddp = bool(ddp)

    def extra_target_channels(self) -> int:
        return len(self.channels)

    def target_transforms(self, first_channel: int) -> list:
        if self.labels is not None:  # label map in channel 0
            return [SkeletonTargetTransform(labels=self.labels, tube_radius=self.tube_radius, insert_at=first_channel,
                                            mode=self.target_mode)]
        # region targets: nnU-Net's foreground region channels come first
        return [SkeletonTargetTransform(channels=list(range(len(self.channels))), tube_radius=self.tube_radius,
                                        insert_at=first_channel, mode=self.target_mode)]

    def hyperparameters(self) -> Dict[str, Any]:
        return {"weight": self.weight, "tube_radius": self.tube_radius, "smooth": self.smooth,
                "batch_dice": self.batch_dice, "deep_supervision_weights": self.deep_supervision_weights,
                "target_mode": self.target_mode, "ddp": self.ddp, "labels": self.labels,
                "output_channels": self.channels}

    def compute_losses(self, outputs: Dict[str, Any], batch: AuxBatch) -> Dict[str, torch.Tensor]:
        logits = outputs["logits"]
        deep = isinstance(logits, (list, tuple))
        if deep and self.deep_supervision_weights is not None:
            weights = self.deep_supervision_weights
        else:
            weights = [1.0]
        n = len(weights)
        logits = _levels(logits, n)
        targets = _levels(batch.targets, n)
        valid = _levels(batch.valid, n)
        loss = None
        for w, lg, sk, v in zip(weights, logits, targets, valid):
            if w == 0:
                continue
            probabilities = foreground_probabilities(lg, self.channels, regions=self.labels is None)
            term = w * skeleton_recall_loss(probabilities, sk, v, self.batch_dice, self.smooth, self.ddp)
            loss = term if loss is None else loss + term
        return {"skeleton_recall": loss}
