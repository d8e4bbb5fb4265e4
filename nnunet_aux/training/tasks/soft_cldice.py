"""soft-clDice (Shit et al., CVPR 2021) on nnU-Net's main output: a task without parameters or targets of its own."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from ...losses import soft_cldice_loss
from ..task import AuxBatch
from .skeleton_recall import MainOutputTask, check_count, foreground_probabilities

#: Shit et al.'s current code (jocpae/clDice, cldice_loss/pytorch/cldice.py): ``soft_cldice(iter_=3, smooth=1.,
#: exclude_background=False)`` and ``soft_dice_cldice(iter_=3, alpha=0.5, ...)`` build
#: ``SoftSkeletonize(num_iter=10)`` in ``__init__`` (lines 10 and 39): ``iter_`` is stored but never used,
#: every soft skeleton takes 10 iterations.
PAPER_CLDICE_ITERATIONS = 10
PAPER_CLDICE_ALPHA = 0.5
PAPER_CLDICE_SMOOTH = 1.0
#: ``exclude_background=False``: the background channel enters the pooled sums (cldice.py, lines 15-17)
PAPER_CLDICE_EXCLUDE_BACKGROUND = False


class SoftClDiceTask(MainOutputTask):
    """L = L_nnU-Net + alpha (1 - soft-clDice), at the highest output resolution.

    Parameters
    ----------
    channels : sequence of int
        Output channel of each structure.
    labels : sequence of tuple of int, optional
        Label values of each structure (label datasets: the target is nnU-Net's label map);
        None for region datasets (structure k is region channel k of nnU-Net's target).
    weight : float
        alpha (Shit et al.'s code: 0.5). They train with ``(1 - alpha) Dice + alpha clDice``;
        here nnU-Net's Dice + CE keeps weight 1 (its learning rate and schedule are tuned for it)
        and ``alpha * clDice`` is added.
    iterations : int
        k of the soft skeleton (their current code: 10, whatever ``iter_`` says).
    smooth : float
        Smoothing of T_prec and T_sens (their code: 1).
    exclude_background : bool
        Label datasets: False (their default) adds nnU-Net's background channel (softmax channel 0,
        target label 0) to the structures. Region datasets have no background channel.
    per_structure : bool
        False (their code): one clDice with the sums pooled over the batch and every channel. True (a
        package setting): one clDice per channel (sums over the batch), averaged.

    References
    ----------
    .. [1] S. Shit, J. C. Paetzold et al., "clDice - a novel topology-preserving loss function for
           tubular structure segmentation", CVPR 2021, arXiv:2003.07311, Eq. 3-4, Alg. 1-2.
    """

    name = "cldice"

    def __init__(self, channels: Sequence[int], labels: Optional[Sequence[Tuple[int, ...]]] = None,
                 weight: float = PAPER_CLDICE_ALPHA, iterations: int = PAPER_CLDICE_ITERATIONS,
                 smooth: float = PAPER_CLDICE_SMOOTH, exclude_background: bool = PAPER_CLDICE_EXCLUDE_BACKGROUND,
                 per_structure: bool = False):
        super().__init__()
        self.init_structures(channels, labels, weight, "clDice")
        self.iterations = check_count("iterations", iterations)
        self.smooth = float(smooth)
        self.exclude_background = bool(exclude_background)
        self.per_structure = bool(per_structure)

    @property
    def with_background(self) -> bool:
        """Whether nnU-Net's background channel is one of the compared channels (label datasets only)."""
        return self.labels is not None and not self.exclude_background

    def hyperparameters(self) -> Dict[str, Any]:
        return {"weight": self.weight, "iterations": self.iterations, "smooth": self.smooth,
                "exclude_background": self.exclude_background, "per_structure": self.per_structure,
                "labels": self.labels, "output_channels": self.channels}

    def target_masks(self, main_target: torch.Tensor) -> torch.Tensor:
        """Binary (B, K, ...) masks of the structures from nnU-Net's main target."""
        if self.labels is None:
            return main_target[:, :len(self.channels)].bool()
        labels = main_target[:, 0]
        values = ([(0,)] if self.with_background else []) + self.labels
        return torch.stack([torch.isin(labels, torch.as_tensor(group, device=labels.device)) for group in values], 1)

    def compute_losses(self, outputs: Dict[str, Any], batch: AuxBatch) -> Dict[str, torch.Tensor]:
        def first(value):
            return value[0] if isinstance(value, (list, tuple)) else value

        logits = first(outputs["logits"])
        channels = ([0] if self.with_background else []) + self.channels
        probabilities = foreground_probabilities(logits, channels, regions=self.labels is None)
        target = self.target_masks(first(batch.main_target))
        return {"cldice": soft_cldice_loss(probabilities, target, self.iterations, self.smooth,
                                           first(batch.valid), pool_channels=not self.per_structure)}
