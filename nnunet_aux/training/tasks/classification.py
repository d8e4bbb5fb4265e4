"""Context-aware presence classification on the encoder bottleneck (CMU-Net), as an auxiliary task.

The head predicts, for every foreground class (label datasets) or region (region-based
datasets), whether it appears in the input patch. Its targets are read off nnU-Net's own
main target, i.e. after all of nnU-Net's augmentation: a structure rotated or cropped out
of the patch is absent.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from ...heads import ClassificationHead, EncoderSpec
from ...losses import FocalLoss
from ..task import AuxBatch, AuxiliaryTask

__all__ = ["ClsTask", "presence_accuracy", "presence_auroc", "presence_targets"]


def presence_targets(main_target: torch.Tensor, labels: Optional[Sequence[int]] = None,
                     n_regions: Optional[int] = None, valid: Optional[torch.Tensor] = None,
                     threshold: int = 1) -> torch.Tensor:
    """Which structures each sample of a batch contains, from its segmentation target.

    A structure is present when at least ``threshold`` of its voxels are in the patch.
    Voxels under nnU-Net's ignore label never count.

    Parameters
    ----------
    main_target : (B, C, *spatial) torch.Tensor
        nnU-Net's target at one resolution: a label map (``C = 1``) when ``labels`` is
        given, else binary region channels (``C >= n_regions``; a trailing ignore channel
        is not read).
    labels : sequence of int, optional
        Foreground label values of a label dataset, one structure each.
    n_regions : int, optional
        Number of foreground regions of a region-based dataset (its first channels).
    valid : (B, 1, *spatial) torch.Tensor of bool, optional
        False on ignored voxels.
    threshold : int, optional
        Voxels a structure needs in the patch to count as present (1: any voxel, the
        paper's ``C = max(Y)``).

    Returns
    -------
    presence : (B, K) torch.Tensor of float32
        1 where structure ``k`` is present in sample ``b``, 0 elsewhere.

    References
    ----------
    .. [1] A. Moseley, A. Wang and A. A. Z. Imran, "Context-aware multitasking for medical
           image segmentation" (CMU-Net), Sect. 2 (class labels ``C = {max(Y_i)}``).

    Examples
    --------
    >>> seg = torch.tensor([[[0, 1, 1, 5]], [[2, 0, 0, 5]]])  # (B=2, 1, 4 voxels), 5 = ignore
    >>> presence_targets(seg, labels=[1, 2])
    tensor([[1., 0.],
            [0., 1.]])
    >>> presence_targets(seg, labels=[1, 2], threshold=2)
    tensor([[1., 0.],
            [0., 0.]])
    """
    if (labels is None) == (n_regions is None):
        raise ValueError("give exactly one of labels (label dataset) or n_regions (region dataset)")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or threshold < 1:
        raise ValueError(f"threshold must be a positive number of voxels, got {threshold!r}")
    if main_target.ndim < 3:
        raise ValueError(f"main_target must be (B, C, *spatial), got shape {tuple(main_target.shape)}")
    if labels is not None:
        if main_target.shape[1] != 1:
            raise ValueError(f"a label-map target has one channel, got {main_target.shape[1]}")
        values = torch.as_tensor(list(labels), device=main_target.device)
        shape = (1, -1) + (1,) * (main_target.ndim - 2)
        # (B, K, *spatial): one mask per label; ignore-label voxels match no foreground label
        masks = main_target.long() == values.view(shape).long()
    else:
        if main_target.shape[1] < n_regions:
            raise ValueError(f"target has {main_target.shape[1]} channels, fewer than n_regions={n_regions}")
        masks = main_target[:, :n_regions].bool()
    if valid is not None:
        masks = masks & valid.bool()
    counts = masks.flatten(2).sum(2)
    return (counts >= threshold).float()


def presence_accuracy(probabilities: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of (sample, structure) decisions that are right.

    Parameters
    ----------
    probabilities : (N, K) array_like of float
        Predicted presence probabilities.
    targets : (N, K) array_like of {0, 1}
        True presence.
    threshold : float, optional
        Probability from which a structure is predicted present.

    Returns
    -------
    accuracy : float
        NaN when there is no decision.

    Examples
    --------
    >>> presence_accuracy(np.array([[0.9, 0.2], [0.4, 0.7]]), np.array([[1, 0], [1, 1]]))
    0.75
    """
    probabilities, targets = _paired(probabilities, targets)
    if probabilities.size == 0:
        return float("nan")
    return float(np.mean((probabilities >= threshold) == (targets > 0.5)))


def presence_auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the ROC curve of presence scores, pooled over structures (micro average).

    Computed from ranks (the Mann-Whitney U statistic), ties counting one half.

    Parameters
    ----------
    scores : (N, K) array_like of float
        Predicted presence probabilities (or logits).
    targets : (N, K) array_like of {0, 1}
        True presence.

    Returns
    -------
    auroc : float
        In [0, 1]; NaN when all decisions are positive or all negative (the patches of a
        vessel dataset often all contain vessels).

    References
    ----------
    .. [1] J. A. Hanley and B. J. McNeil, "The meaning and use of the area under a receiver
           operating characteristic (ROC) curve", Radiology 143, 1982.

    Examples
    --------
    >>> presence_auroc(np.array([0.9, 0.6, 0.4, 0.1]), np.array([1, 0, 1, 0]))
    0.75
    """
    scores, targets = _paired(scores, targets)
    positive = targets.reshape(-1) > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores.reshape(-1))
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _paired(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"predictions and targets must have the same shape, got {a.shape} and {b.shape}")
    return a, b


class ClsTask(AuxiliaryTask):
    """Presence classification head on the bottleneck, trained with the focal loss.

    Parameters
    ----------
    spec : EncoderSpec
        The shared encoder; the head reads its deepest stage.
    structure_names : sequence of str
        One name per structure (foreground class or region), in target order.
    labels : sequence of int, optional
        Label values of the structures (label datasets). Omitted for region datasets, where
        structure ``k`` is the ``k``-th region channel of nnU-Net's target.
    presence_threshold : int, optional
        Voxels (at the patch's full resolution) a structure needs to count as present.
    alpha, gamma : float, optional
        Focal loss weighting of positives and focusing parameter (0.8, 2).
    weight : float, optional
        Weight of the classification term in the trainer's total loss.

    Attributes
    ----------
    last_presence : tuple of (N, K) torch.Tensor or None
        Predicted probabilities and targets of the last batch seen in eval mode (CPU,
        float32), for the trainer's validation metrics.

    References
    ----------
    .. [1] A. Moseley, A. Wang and A. A. Z. Imran, "Context-aware multitasking for medical
           image segmentation" (CMU-Net), Sect. 2 and 3.
    """

    name = "cls"

    def __init__(self, spec: EncoderSpec, structure_names: Sequence[str], labels: Optional[Sequence[int]] = None,
                 presence_threshold: int = 1, alpha: Optional[float] = 0.8, gamma: float = 2.0,
                 weight: float = 1.0):
        super().__init__()
        self.structure_names = [str(n) for n in structure_names]
        if not self.structure_names:
            raise ValueError("the classification task needs at least one structure")
        self.labels = None if labels is None else [int(v) for v in labels]
        if self.labels is not None and len(self.labels) != len(self.structure_names):
            raise ValueError(f"{len(self.structure_names)} structure names for {len(self.labels)} labels")
        if isinstance(presence_threshold, bool) or not isinstance(presence_threshold, int) or presence_threshold < 1:
            raise ValueError(f"presence_threshold must be a positive number of voxels, got {presence_threshold!r}")
        if not weight >= 0:
            raise ValueError(f"weight must be non-negative, got {weight!r}")
        self.presence_threshold = presence_threshold
        self.weight = float(weight)
        self.head = ClassificationHead(spec.output_channels[-1], len(self.structure_names))
        self.focal = FocalLoss(alpha, gamma)
        self.last_presence = None

    def hyperparameters(self) -> Dict[str, Any]:
        return {"structures": self.structure_names, "labels": self.labels,
                "presence_threshold": self.presence_threshold, "focal_alpha": self.focal.alpha,
                "focal_gamma": self.focal.gamma, "weight": self.weight}

    def forward(self, skips: List[torch.Tensor], main_output: Any) -> torch.Tensor:
        return self.head(skips[-1])

    def loss_weights(self) -> Dict[str, float]:
        return {"cls": self.weight}

    def targets(self, batch: AuxBatch) -> torch.Tensor:
        """Presence targets (B, K) of a batch, from its highest-resolution main target."""
        main = batch.main_target[0] if isinstance(batch.main_target, (list, tuple)) else batch.main_target
        valid = batch.valid[0] if isinstance(batch.valid, (list, tuple)) else batch.valid
        n_regions = None if self.labels is not None else len(self.structure_names)
        return presence_targets(main, self.labels, n_regions, valid, self.presence_threshold)

    def compute_losses(self, outputs: torch.Tensor, batch: AuxBatch) -> Dict[str, torch.Tensor]:
        targets = self.targets(batch)
        if not self.training:
            # kept for the trainer's accuracy / AUROC; compute_losses runs outside the compiled model
            self.last_presence = (torch.sigmoid(outputs.detach().float()).cpu(), targets.cpu())
        return {"cls": self.focal(outputs, targets)}
