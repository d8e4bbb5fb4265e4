"""Scale-specific auxiliary decoders and the multi-scale contrastive loss (Sadikine et al., Sect. 2.2-2.3)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...heads import AuxiliaryDecoder, EncoderSpec, ProjectionHead
from ...losses import ScaleContrastiveLoss
from ..seg_loss import with_ignore_channel
from ..task import AuxBatch, AuxiliaryTask

#: Logit thresholds at which each scale decoder's validation counts are taken: around 0, and up to
#: log(1000) = 6.9, the largest foreground weight of a balanced L_s (its Bayes decision threshold)
COUNT_THRESHOLDS = (0.0, -4.0, -2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)
#: Sadikine et al., Sect. 3.2 (Optuna-tuned for S = 3)
PAPER_SCALE_WEIGHTS = (0.78, 0.48, 0.54)


def default_scale_weights(n_scales: int) -> Tuple[float, ...]:
    """lambda_s of Eq. 5: the paper's values for 3 scales; otherwise their mean (0.6) for every scale.

    The paper tuned the weights for S = 3 only; for other S we keep the same total strength
    per scale rather than guess a ranking.
    """
    if n_scales == len(PAPER_SCALE_WEIGHTS):
        return PAPER_SCALE_WEIGHTS
    mean = round(sum(PAPER_SCALE_WEIGHTS) / len(PAPER_SCALE_WEIGHTS), 4)
    return (mean,) * n_scales


class ScaleTask(AuxiliaryTask):
    """One auxiliary decoder D_s per vessel scale, optionally with the scale contrastive loss.

    Parameters
    ----------
    spec : EncoderSpec
        The shared encoder E (nnU-Net's); gives the projection heads' convolution,
        normalisation and non-linearity.
    main_decoder : nn.Module
        nnU-Net's decoder D_mt; each D_s is a copy of its architecture
        (:class:`~nnunet_aux.heads.AuxiliaryDecoder`) with its own weights.
    scale_labels : sequence of int
        Label values of the scales in the dataset, smallest to largest.
    scale_names : sequence of str
        Their names (used for the logged loss terms).
    make_seg_loss : callable
        Builds nnU-Net's Dice + BCE loss with deep supervision (one per decoder); called
        with ``levels=K`` when the decoders keep only K stages (the loss of the K lowest
        deep-supervision levels).
    deep_supervision : bool
        Deep supervision on the auxiliary outputs, as on the main output.
    scale_weights : sequence of float
        lambda_s of Eq. 5.
    contrastive_weight : float
        lambda_c of Eq. 9; 0 builds no projection heads (the paper's lambda_c = 0 ablation).
    temperature : float
        tau of Eq. 8.
    voxels_per_scale : int
        Anchors drawn per scale and batch (bounds the loss's cost).
    sampling : {'random', 'hard'}
        How anchors are drawn; 'hard' prefers voxels the scale's own decoder misses.
    embedding_dim, projection_hidden : int
        Widths of proj_s (Eq. 6).
    decoder_width : float
        Feature maps of each D_s relative to D_mt, in (0, 1]; 1 is the paper's full decoder,
        less gives light decoders (same stages and skips, skips reduced by a 1x1x1 conv).
    decoder_stages : int or sequence, optional
        Stages of each D_s, deepest first (see :class:`~nnunet_aux.heads.AuxiliaryDecoder`):
        None keeps all (the paper), ``-1`` all but the highest-resolution one. A sequence gives
        one value per scale, smallest first (e.g. ``(None, -1, -1)``: the small-vessel decoder
        keeps the full-resolution stage, where vessels of 1-2 voxels are still resolved).
    target_downsampling : {'nearest', 'max'}
        How the scale masks reach the lower-resolution outputs (deep supervision, cut decoders,
        the contrastive loss's labels). 'nearest' is nnU-Net's way (one voxel of each 2 x 2 x 2
        block): a vessel one voxel wide then survives only where it happens to lie on even
        coordinates, a target the image cannot predict. 'max' marks a coarse voxel as scale s
        when any of its fine voxels is ("any" pooling): thin vessels stay whole and connected.
    loss_settings : dict, optional
        How ``make_seg_loss`` builds L_s (batch Dice, BCE weighting), for the log and checkpoint.

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning for deep
           liver vessel segmentation", ISBI 2023, Eq. 4-9.
    """

    name = "scale"

    def __init__(self, spec: EncoderSpec, main_decoder: nn.Module, scale_labels: Sequence[int],
                 scale_names: Sequence[str], make_seg_loss: Callable[[], nn.Module], deep_supervision: bool,
                 scale_weights: Sequence[float], contrastive_weight: float = 0.0, temperature: float = 0.94,
                 voxels_per_scale: int = 512, sampling: str = "random", embedding_dim: int = 64,
                 projection_hidden: Optional[int] = None, decoder_width: float = 1.0,
                 decoder_stages: Optional[int] = None, target_downsampling: str = "nearest",
                 loss_settings: Optional[Dict[str, Any]] = None):
        super().__init__()
        if target_downsampling not in ("nearest", "max"):
            raise ValueError(f"target_downsampling must be 'nearest' or 'max', got {target_downsampling!r}")
        self.target_downsampling = target_downsampling
        if len(scale_labels) < 2:
            raise ValueError(f"need at least 2 scales, got labels {list(scale_labels)}")
        if len(scale_weights) != len(scale_labels):
            raise ValueError(f"{len(scale_labels)} scales need {len(scale_labels)} weights, got {list(scale_weights)}")
        self.scale_labels = [int(v) for v in scale_labels]
        self.scale_names = list(scale_names)
        self.scale_weights = [float(w) for w in scale_weights]
        self.contrastive_weight = float(contrastive_weight)
        stages = _per_scale(decoder_stages, len(self.scale_labels))
        self.decoders = nn.ModuleList(
            AuxiliaryDecoder(main_decoder, 1, deep_supervision, width=decoder_width, spec=spec, stages=k)
            for k in stages)
        #: stages of nnU-Net's decoder, and those each D_s keeps (its outputs: the lowest ``kept`` levels)
        self.num_levels = len(main_decoder.stages)
        self.kept_stages = [d.num_stages for d in self.decoders]
        self.seg_losses = nn.ModuleList(make_seg_loss(levels=k) if k < self.num_levels else make_seg_loss()
                                        for k in self.kept_stages)
        self.projections = None
        self.contrastive = None
        if self.contrastive_weight > 0:
            width = self.decoders[0].first_stage_channels
            hidden = projection_hidden or max(embedding_dim, width // 2)
            self.projections = nn.ModuleList(
                ProjectionHead(spec, width, hidden, embedding_dim) for _ in self.scale_labels)
            self.contrastive = ScaleContrastiveLoss(temperature, voxels_per_scale, sampling)
        self._settings = {
            "scale_labels": self.scale_labels, "scale_names": self.scale_names,
            "scale_weights": self.scale_weights, "contrastive_weight": self.contrastive_weight,
            "temperature": temperature, "voxels_per_scale": voxels_per_scale, "sampling": sampling,
            "embedding_dim": embedding_dim if self.projections is not None else None,
            "projection_hidden": hidden if self.projections is not None else None,
            "decoder_width": float(decoder_width),
            "decoder_stages": list(decoder_stages) if isinstance(decoder_stages, (list, tuple)) else decoder_stages,
            "target_downsampling": target_downsampling,
            **(loss_settings or {}),
        }

    def target_regions(self) -> List[Tuple[int, ...]]:
        return [(v,) for v in self.scale_labels]

    def hyperparameters(self) -> Dict[str, Any]:
        return dict(self._settings)

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        for d in self.decoders:
            d.deep_supervision = enabled

    def forward(self, skips: List[torch.Tensor], main_output: Any) -> Dict[str, Any]:
        logits, embeddings = [], []
        for s, decoder in enumerate(self.decoders):
            out, first = decoder(skips)
            logits.append(out)
            if self.projections is not None:
                embeddings.append(self.projections[s](first))
        return {"logits": logits, "embeddings": embeddings}

    def loss_weights(self) -> Dict[str, float]:
        weights = {f"scale_{n}": w for n, w in zip(self.scale_names, self.scale_weights)}
        if self.contrastive is not None:
            weights["contrastive"] = self.contrastive_weight
        return weights

    def _own_levels(self, targets, valid, s: int, outputs: Dict[str, Any]):
        """The targets (and valid masks) at the resolutions of decoder ``s``'s outputs.

        With deep supervision: the lowest ``kept_stages[s]`` levels (of :meth:`_levels`). Without:
        the full-resolution target, downsampled to the output's size when the decoder is cut.
        """
        if isinstance(targets, list):
            first = self.num_levels - self.kept_stages[s]
            return targets[first:], (valid[first:] if valid is not None else None)
        logits = outputs["logits"][s]
        size = (logits[0] if isinstance(logits, list) else logits).shape[2:]
        if tuple(targets.shape[2:]) == tuple(size):
            return targets, valid
        return self._downsampled(targets, valid, size)

    def _downsampled(self, target: torch.Tensor, valid: Optional[torch.Tensor], size):
        """A full-resolution target (and valid mask) at ``size``, the way ``target_downsampling`` says."""
        if self.target_downsampling == "nearest":
            return _resized(target, size), (None if valid is None else _resized(valid, size))
        if valid is not None:
            # a coarse voxel is scale s when any of its valid fine voxels is, valid when any fine voxel is
            return _any_pooled(target & valid, size), _any_pooled(valid, size)
        return _any_pooled(target, size), None

    def _levels(self, targets, valid):
        """nnU-Net's deep-supervision targets, re-pooled from full resolution when ``target_downsampling`` is 'max'.

        nnU-Net hands over its pyramid (nearest-exact, first level full resolution); with
        'max' each lower level is rebuilt at the same size by pooling the level above it ("any" of
        "any" is "any" over the whole block, since nnU-Net's strides are whole numbers). Once per batch.
        """
        if self.target_downsampling == "nearest" or not isinstance(targets, list):
            return targets, valid
        out_t, out_v = [targets[0]], [valid[0]] if valid is not None else None
        for level in range(1, len(targets)):
            t, v = self._downsampled(out_t[-1], None if valid is None else out_v[-1], targets[level].shape[2:])
            out_t.append(t)
            if out_v is not None:
                out_v.append(v)
        return out_t, out_v

    def compute_losses(self, outputs: Dict[str, Any], batch: AuxBatch) -> Dict[str, torch.Tensor]:
        losses = {}
        all_targets, all_valid = self._levels(batch.targets, batch.valid)
        for s, name in enumerate(self.scale_names):
            targets, valid = self._own_levels(all_targets, all_valid, s, outputs)
            if isinstance(targets, list):
                t = [with_ignore_channel(tt[:, s:s + 1], None if valid is None else v) for tt, v in
                     zip(targets, valid if valid is not None else [None] * len(targets))]
            else:
                t = with_ignore_channel(targets[:, s:s + 1], valid)
            losses[f"scale_{name}"] = self.seg_losses[s](outputs["logits"][s], t)
        if self.contrastive is not None:
            losses["contrastive"] = self._contrastive_loss(outputs, all_targets, all_valid)
        return losses

    def validation_counts(self, outputs: Dict[str, Any], batch: AuxBatch) -> Dict[str, torch.Tensor]:
        """(tp, fp, fn) of each D_s on its own scale at its highest output resolution.

        ``scale_<name>``: logit > 0. ``scale_<name>@logit>t``: the same at the other thresholds of
        :data:`COUNT_THRESHOLDS`, from which the trainer logs the Dice at the best fixed
        threshold of the epoch (``val_dice_best_scale_<name>``): a decoder trained with a
        class-weighted cross-entropy estimates ``logit(q) + log w`` (w up to 1000 for the
        rarest scale), so its raw output over-segments by design and the Dice at logit 0
        understates what it has learned. Ignored voxels are left out.
        """
        counts = {}
        all_targets, all_valid = self._levels(batch.targets, batch.valid)
        for s, name in enumerate(self.scale_names):
            targets, valid = self._own_levels(all_targets, all_valid, s, outputs)
            targets = targets[0] if isinstance(targets, list) else targets
            if valid is not None:
                valid = valid[0] if isinstance(valid, list) else valid
            logits = outputs["logits"][s]
            logits = logits[0] if isinstance(logits, list) else logits
            ref = targets[:, s:s + 1].bool()
            if valid is not None:
                ref = ref & valid
            for threshold in COUNT_THRESHOLDS:
                pred = logits > threshold
                if valid is not None:
                    pred = pred & valid
                key = f"scale_{name}" if threshold == 0 else f"scale_{name}@logit>{threshold:g}"
                counts[key] = torch.stack([(pred & ref).sum(), (pred & ~ref).sum(), (~pred & ref).sum()])
        return counts

    def _contrastive_loss(self, outputs, targets, valid) -> torch.Tensor:
        emb = outputs["embeddings"]
        size = emb[0].shape[2:]
        # Scale labels at the resolution of the decoders' first stage: the lowest deep-supervision
        # target has exactly that resolution; without deep supervision we downsample.
        t = targets[-1] if isinstance(targets, list) else targets
        v = (valid[-1] if isinstance(valid, list) else valid) if valid is not None else None
        if tuple(t.shape[2:]) != tuple(size):
            t, v = self._downsampled(t.bool(), None if v is None else v.bool(), size)
        present = t.any(1)
        labels = torch.where(present, t.float().argmax(1) + 1, torch.zeros_like(present, dtype=torch.long))
        # z_i^s: a voxel of scale s is embedded by proj_s of decoder D_s (Eq. 6).
        stacked = torch.stack(emb, 0)  # (S, B, C, ...)
        index = (labels.clamp(min=1) - 1)[None, :, None].expand(1, -1, stacked.shape[2], *labels.shape[1:])
        embeddings = stacked.gather(0, index)[0]
        hardness = None
        if self.contrastive.sampling == "hard":
            lowest = torch.cat([lg[-1] if isinstance(lg, list) else lg for lg in outputs["logits"]], 1)
            if tuple(lowest.shape[2:]) != tuple(size):
                lowest = F.interpolate(lowest.float(), size=size, mode="nearest-exact")
            own = torch.sigmoid(lowest.float().detach()).gather(1, (labels.clamp(min=1) - 1)[:, None])[:, 0]
            hardness = torch.where(labels > 0, 1 - own, torch.zeros_like(own))
        return self.contrastive(embeddings, labels, valid_mask=None if v is None else v[:, 0],
                                hardness=hardness)


def _per_scale(stages, n_scales: int) -> list:
    """``decoder_stages`` as one value per scale (a single value holds for every scale)."""
    if isinstance(stages, (list, tuple)):
        if len(stages) != n_scales:
            raise ValueError(f"{n_scales} scales need {n_scales} decoder_stages values, got {list(stages)}")
        return list(stages)
    return [stages] * n_scales


def _any_pooled(mask: torch.Tensor, size) -> torch.Tensor:
    """A binary mask at ``size``: a coarse voxel is set when any fine voxel it covers is (adaptive max pooling)."""
    if tuple(mask.shape[2:]) == tuple(size):
        return mask.bool()
    pool = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}[mask.ndim - 2]
    return pool(mask.float(), tuple(int(n) for n in size)) > 0.5


def _resized(mask: torch.Tensor, size) -> torch.Tensor:
    """A binary mask at ``size``, nearest-exact (as nnU-Net downsamples its deep-supervision targets)."""
    return F.interpolate(mask.float(), size=tuple(size), mode="nearest-exact") > 0.5
