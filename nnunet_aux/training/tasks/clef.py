"""CLEF self-supervised pretraining: heads on the last decoder features, three losses, two passes."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ...heads import CLEFHead, EncoderSpec, check_encoder_decoder, decoder_features
from ...losses import CLEFDiscriminativeLoss, CLEFEquivarianceLoss, PlaneTransforms, RandomPlaneAffine, decoding_loss
from ..task import AuxBatch, AuxiliaryTask

__all__ = ["CLEFTask", "CLEFTrainingModel"]


class CLEFTask(AuxiliaryTask):
    """CLEF's feature and decoding heads, its random affine ``T`` and its three loss terms.

    Loss terms (logged as ``train_loss_<term>`` / ``val_loss_<term>``):

    * ``decoding``: MSE between the decoding head's output and the input patch;
    * ``discriminative``: Eq. 1 on ``n_anchors`` anchors and ``n_leaves`` leaves per patch,
      pairs at least ``min_distance_mm`` apart (distances from the plan's voxel spacing);
    * ``equivariance``: Eq. 2, ``-<T(f(X)), f(T(X))>`` (inner product of the unit features,
      averaged over the voxels where ``T(f(X))`` is defined), ``T`` drawn per patch by
      :class:`RandomPlaneAffine`.

    The task takes no targets: labels of the dataset, ignore label included, are unused.

    Parameters
    ----------
    spec : EncoderSpec
        The U-Net's encoder (convolution type and non-linearity for the heads).
    image_channels : int
        Input channels of the network.
    spacing : sequence of float
        Voxel size of the configuration's patches, mm (2 or 3 values).
    feature_dim, hidden_channels
        :class:`~nnunet_aux.heads.CLEFHead`; ``feature_dim`` None: the last decoder stage's width.
    weights : (float, float, float), optional
        Weights of the decoding, discriminativeness and equivariance terms.
    n_anchors, n_leaves, margin, min_distance_mm, reduction
        :class:`~nnunet_aux.losses.CLEFDiscriminativeLoss`.
    max_rotation_deg, scale_range, max_shift
        :class:`~nnunet_aux.losses.RandomPlaneAffine`.

    References
    ----------
    .. [1] I. Kuleshov, M. Goncharov and V. Soboleva, "CLEF: Contrastive learning of
           equivariant features in CT images", Sect. 2.2 and 3.2.
    """

    name = "clef"
    TERMS = ("decoding", "discriminative", "equivariance")

    def __init__(self, spec: EncoderSpec, image_channels: int, spacing: Sequence[float],
                 feature_dim: Optional[int] = None,
                 hidden_channels: Optional[int] = None, weights: Tuple[float, float, float] = (1.0, 1.0, 1.0),
                 n_anchors: int = 32, n_leaves: int = 1024, margin: float = -0.9, min_distance_mm: float = 10.0,
                 reduction: str = "sum", max_rotation_deg: float = 30.0,
                 scale_range: Tuple[float, float] = (1.0, 1.5), max_shift: float = 0.1):
        super().__init__()
        if len(spacing) != spec.ndim:
            raise ValueError(f"spacing {tuple(spacing)} does not fit the {spec.ndim}D network")
        if len(weights) != 3 or any(not w >= 0 for w in weights):
            raise ValueError(f"weights must be three non-negative numbers, got {weights!r}")
        width = spec.output_channels[0]  # the last decoder stage's width
        feature_dim = width if feature_dim is None else int(feature_dim)
        self.head = CLEFHead(spec, width, image_channels, feature_dim, hidden_channels)
        self.transform = RandomPlaneAffine(spacing, max_rotation_deg, scale_range, max_shift)
        self.discriminative = CLEFDiscriminativeLoss(spacing, n_anchors, n_leaves, margin, min_distance_mm, reduction)
        self.equivariance = CLEFEquivarianceLoss()
        self.weights = dict(zip(self.TERMS, (float(w) for w in weights)))
        self._settings = {
            "feature_dim": int(feature_dim), "hidden_channels": self.head.hidden_channels,
            "weights": dict(self.weights), "n_anchors": int(n_anchors), "n_leaves": int(n_leaves),
            "margin": float(margin), "min_distance_mm": float(min_distance_mm), "reduction": reduction,
            "spacing_mm": [float(s) for s in spacing], "max_rotation_deg": float(max_rotation_deg),
            "scale_range": [float(s) for s in scale_range], "max_shift": float(max_shift),
        }

    def hyperparameters(self) -> Dict[str, Any]:
        return dict(self._settings)

    def loss_weights(self) -> Dict[str, float]:
        return dict(self.weights)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(f, decoded)`` of the last decoder features (B, C, *spatial)."""
        return self.head(features)

    def sample_transform(self, data: torch.Tensor, generator: Optional[torch.Generator] = None) -> PlaneTransforms:
        """One random ``T`` per patch of ``data``; ``T(X)`` is ``transform.warp(data)``."""
        return self.transform(data, generator)

    def compute_losses(self, outputs: Dict[str, Any], batch: AuxBatch) -> Dict[str, torch.Tensor]:
        """The three unweighted terms from :class:`CLEFTrainingModel`'s outputs (plus ``transform``).

        ``f(X)`` is resampled by the same transform (the same grid) that made ``T(X)``.
        """
        return {
            "decoding": decoding_loss(outputs["decoded"], batch.data),
            "discriminative": self.discriminative(outputs["features"]),
            "equivariance": self.equivariance(outputs["features"], outputs["features_warped"], outputs["transform"]),
        }


class CLEFTrainingModel(nn.Module):
    """The U-Net and the CLEF heads as one module (what DDP and ``torch.compile`` wrap).

    ``forward(x, x_warped)`` runs the U-Net twice, on ``X`` and on ``T(X)``, and returns the
    unit-length features of both passes and the decoding head's output of the first. The
    U-Net's segmentation layers are not used. (``T(X)`` is made outside, so that the
    per-image resampling stays out of ``torch.compile``'s graph.)
    """

    def __init__(self, network: nn.Module, tasks: nn.ModuleDict):
        super().__init__()
        self.network = check_encoder_decoder(network)
        self.tasks = tasks

    def forward(self, x: torch.Tensor, x_warped: torch.Tensor) -> Dict[str, torch.Tensor]:
        task = self.tasks[CLEFTask.name]
        features, decoded = task(decoder_features(self.network, x))
        features_warped = task.head.embed(decoder_features(self.network, x_warped))
        return {"features": features, "decoded": decoded, "features_warped": features_warped}
