r"""CLEF's three pretraining losses (Kuleshov, Goncharov and Soboleva, Sect. 2.2).

* decoding loss: MSE between a decoding head's output and the input image;
* discriminativeness loss (Eq. 1): features of voxels at least 10 mm apart must not be
  alike, ``sum relu(M - D)`` over anchor-leaf pairs with ``D = -<f_a, f_l>``;
* equivariance loss (Eq. 2): ``L_e = -<T(f(X)), f(T(X))>`` for a random affine ``T``.

Features are unit vectors (the head normalises them). ``T`` is built in physical
space (voxel spacing times patch size), so a rotation of a patch with anisotropic voxels
is a rotation of the anatomy, and is applied through one sampling grid
(:func:`torch.nn.functional.affine_grid`) to the image and to the feature map alike.
Everything here is plain torch, for 2D and 3D tensors ``(B, C, *spatial)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._numerics import autocast_disabled

__all__ = [
    "CLEFDiscriminativeLoss",
    "CLEFEquivarianceLoss",
    "PlaneTransforms",
    "RandomPlaneAffine",
    "affine_matrix",
    "affine_sampling_grid",
    "affine_warp",
    "decoding_loss",
    "discriminative_loss",
    "discriminative_loss_at",
    "draw_voxels",
    "equivariance_loss",
    "physical_distances",
    "valid_sampling_mask",
]

_NORM_EPS = 1e-6
_REDUCTIONS = ("sum", "mean")


def decoding_loss(decoded: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    r"""CLEF's decoding loss, :math:`L_{dec} = \frac{1}{N}\sum (f_{dec}(f_{enc}(X)) - X)^2`.

    Parameters
    ----------
    decoded : (B, C, *spatial) torch.Tensor
        Output of the decoding head.
    image : (B, C, *spatial) torch.Tensor
        The network input ``X``.

    Returns
    -------
    loss : torch.Tensor
        Scalar float32 mean squared error over every voxel and channel.

    References
    ----------
    .. [1] I. Kuleshov, M. Goncharov and V. Soboleva, "CLEF: Contrastive learning of
           equivariant features in CT images", Sect. 2.2, "Pretraining: Decoding Loss".

    Examples
    --------
    >>> decoding_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    tensor(1.)
    """
    if decoded.shape != image.shape:
        raise ValueError(f"decoded {tuple(decoded.shape)} and image {tuple(image.shape)} differ in shape")
    with autocast_disabled(decoded.device):
        return F.mse_loss(_float(decoded), _float(image).to(_float(decoded).dtype))


def physical_distances(a: torch.Tensor, b: torch.Tensor, shape: Sequence[int],
                       spacing: Sequence[float]) -> torch.Tensor:
    """Euclidean distances in mm between voxels given by flat indices into ``shape``.

    Parameters
    ----------
    a : (..., N) torch.Tensor of int
        Flat (row-major) voxel indices.
    b : (..., M) torch.Tensor of int
        Flat voxel indices, same leading dimensions as ``a``.
    shape : sequence of int
        Spatial shape the indices refer to.
    spacing : sequence of float
        Voxel size along each axis of ``shape``, mm.

    Returns
    -------
    distances : (..., N, M) torch.Tensor of float32

    Examples
    --------
    >>> physical_distances(torch.tensor([0]), torch.tensor([1, 2]), (2, 2), (3.0, 1.0))
    tensor([[1., 3.]])
    """
    if len(shape) != len(spacing):
        raise ValueError(f"shape {tuple(shape)} and spacing {tuple(spacing)} differ in length")

    def coordinates(index):
        out, rest = [], index.long()
        for size, step in zip(reversed(list(shape)), reversed(list(spacing))):
            out.append((rest % size).float() * float(step))
            rest = torch.div(rest, size, rounding_mode="floor")
        return torch.stack(out[::-1], -1)

    # exact differences (cdist's matrix-product shortcut is off by ~1e-3 mm, enough to move a pair across 10 mm)
    return torch.cdist(coordinates(a), coordinates(b), compute_mode="donot_use_mm_for_euclid_dist")


def _float(x: torch.Tensor) -> torch.Tensor:
    """float32 for low-precision tensors; float64 stays (for gradient checks)."""
    return x if x.dtype == torch.float64 else x.float()


def _gather_unit(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Unit-length float32 feature vectors (B, C, n) of the voxels ``index`` (B, n) of ``features`` (B, C, *spatial).

    Gathers before normalising: only the sampled vectors are normalised (zero vectors stay zero).
    """
    flat = features.flatten(2)
    picked = torch.gather(flat, 2, index[:, None].expand(-1, flat.shape[1], -1).to(flat.device))
    return F.normalize(_float(picked), dim=1, eps=_NORM_EPS)


def discriminative_loss_at(features: torch.Tensor, anchors: torch.Tensor, leaves: torch.Tensor,
                           spacing: Sequence[float], margin: float = -0.9, min_distance_mm: float = 10.0,
                           reduction: str = "sum") -> torch.Tensor:
    r"""CLEF's discriminativeness loss (Eq. 1) for given anchor and leaf voxels.

    .. math::

        D[i_A, i_L] = -\langle f_{i_A}, f_{i_L} \rangle, \qquad
        L_d = \sum_{i_A \in I_A} \sum_{i_L \in F(i_A)} \mathrm{relu}(M - D[i_A, i_L]),

    with :math:`F(i_A) = \{i_L : \|i_L - i_A\|_{mm} \ge` ``min_distance_mm``:math:`\}`
    and unit-length features. Pairs are formed within each image.

    Parameters
    ----------
    features : (B, C, *spatial) torch.Tensor
        Feature map (normalised here).
    anchors : (B, A) torch.Tensor of int
        Flat voxel indices of the anchors of each image.
    leaves : (B, L) torch.Tensor of int
        Flat voxel indices of the leaves of each image.
    spacing : sequence of float
        Voxel size of ``features`` along each spatial axis, mm.
    margin : float, optional
        ``M`` (the paper: -0.9): far pairs are penalised while their cosine exceeds ``-M``.
    min_distance_mm : float, optional
        Pairs closer than this are not compared (the paper: 10 mm).
    reduction : {'sum', 'mean'}, optional
        'sum': the paper's double sum per image, averaged over the batch (equal to Eq. 1
        for one image). 'mean': mean over every far pair of the batch.

    Returns
    -------
    loss : torch.Tensor
        Scalar float32, 0 (attached to the graph) when no pair is far enough.

    References
    ----------
    .. [1] I. Kuleshov, M. Goncharov and V. Soboleva, "CLEF: Contrastive learning of
           equivariant features in CT images", Sect. 2.2, Eq. 1.

    Examples
    --------
    >>> f = torch.tensor([[[1.0, 1.0, 0.0]]]).repeat(1, 2, 1)  # (1, 2, 3): voxels 0, 1 alike
    >>> discriminative_loss_at(f, torch.tensor([[0]]), torch.tensor([[1, 2]]), (10.0,))
    tensor(0.1000)
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if anchors.ndim != 2 or leaves.ndim != 2 or anchors.shape[0] != features.shape[0] \
            or leaves.shape[0] != features.shape[0]:
        raise ValueError(f"anchors {tuple(anchors.shape)} and leaves {tuple(leaves.shape)} must be (B, n) "
                         f"with B = {features.shape[0]}")
    shape = features.shape[2:]
    anchors, leaves = anchors.to(features.device).long(), leaves.to(features.device).long()
    with autocast_disabled(features.device):
        fa, fl = _gather_unit(features, anchors), _gather_unit(features, leaves)
        d = -torch.einsum("bca,bcl->bal", fa, fl)
        far = physical_distances(anchors, leaves, shape, spacing) >= min_distance_mm
        hinge = torch.relu(margin - d) * far  # no far pair: 0, still attached to the graph (and no device sync)
        if reduction == "sum":
            return hinge.sum((1, 2)).mean()
        return hinge.sum() / far.sum().clamp_min(1)


def discriminative_loss(features: torch.Tensor, spacing: Sequence[float], n_anchors: int = 32,
                        n_leaves: int = 1024, margin: float = -0.9, min_distance_mm: float = 10.0,
                        reduction: str = "sum", generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Eq. 1 on anchors and leaves drawn uniformly from each image (:func:`draw_voxels`).

    Parameters
    ----------
    features : (B, C, *spatial) torch.Tensor
        Feature map.
    spacing : sequence of float
        Voxel size along each spatial axis, mm.
    n_anchors, n_leaves : int, optional
        Sizes of ``I_A`` (small) and ``I_L`` (large) per image; at most the number of voxels.
    margin, min_distance_mm, reduction
        As :func:`discriminative_loss_at`.
    generator : torch.Generator, optional
        Random source (CPU) of the draw.

    Returns
    -------
    loss : torch.Tensor

    Examples
    --------
    >>> f = torch.randn(2, 8, 6, 6, 6)
    >>> bool(discriminative_loss(f, (4.0, 4.0, 4.0), 8, 32) >= 0)
    True
    """
    if n_anchors < 1 or n_leaves < 1:
        raise ValueError(f"need at least one anchor and one leaf, got {n_anchors} and {n_leaves}")
    b, n = features.shape[0], math.prod(features.shape[2:])
    anchors, leaves = draw_voxels(b, n, n_anchors, generator), draw_voxels(b, n, n_leaves, generator)
    return discriminative_loss_at(features, anchors.to(features.device), leaves.to(features.device), spacing,
                                  margin, min_distance_mm, reduction)


def draw_voxels(batch: int, n: int, k: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``min(k, n)`` uniformly drawn flat voxel indices out of ``n``, per image (B, k), on the CPU.

    Without replacement while ``n < 64 k``; beyond, with replacement (a repeated voxel is
    expected for a fraction ``k / 2n < 1 %`` of the draw, and a full permutation of a
    128^3 patch costs more than the loss itself).

    Examples
    --------
    >>> draw_voxels(2, 10, 10, torch.Generator().manual_seed(0)).sort(1).values[0].tolist()
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    k = min(int(k), n)
    if n >= 64 * k:
        return torch.randint(n, (batch, k), generator=generator)
    return torch.stack([torch.randperm(n, generator=generator)[:k] for _ in range(batch)])


# ---------------------------------------------------------------------------------- affine T
def affine_matrix(shape: Sequence[int], spacing: Sequence[float], angle_deg: float = 0.0,
                  plane: Tuple[int, int] = (0, 1), scale: float = 1.0,
                  shift: Optional[Sequence[float]] = None) -> torch.Tensor:
    r"""``theta`` for :func:`torch.nn.functional.affine_grid` of one CLEF transform.

    The transform acts in the plane of the two array axes ``plane``: rotation by
    ``angle_deg`` in physical space, magnification by ``scale`` (the output shows a
    region ``1/scale`` the size) and a shift of the sampled region by ``shift`` (one
    value per axis of the plane, in units of the half-extent of the patch, i.e. the
    normalised coordinates of ``affine_grid``). The other axis is left as it is.

    For an output voxel at physical offset ``p`` (mm) from the patch centre, the image is
    sampled at ``R p / scale + shift * h``, with ``h`` the half-extent ``size * spacing / 2``.
    In normalised coordinates ``u = p / h``: ``u_in = H^-1 R H u / scale + shift``.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the patch, array order (2 or 3 axes).
    spacing : sequence of float
        Voxel size along each axis, mm.
    angle_deg : float, optional
        Rotation angle.
    plane : (int, int), optional
        Array axes spanning the plane of the transform.
    scale : float, optional
        Magnification (> 0).
    shift : sequence of 2 float, optional
        Shift along the two axes of ``plane``.

    Returns
    -------
    theta : (ndim, ndim + 1) torch.Tensor of float32
        In ``affine_grid``'s (x, y[, z]) order, i.e. array axes reversed.

    Examples
    --------
    >>> affine_matrix((4, 4), (1.0, 1.0), scale=2.0)
    tensor([[0.5000, 0.0000, 0.0000],
            [0.0000, 0.5000, 0.0000]])
    """
    ndim = len(shape)
    if ndim not in (2, 3) or len(spacing) != ndim:
        raise ValueError(f"need 2 or 3 axes with one spacing each, got shape {tuple(shape)}, spacing {tuple(spacing)}")
    a, b = plane
    if a == b or not (0 <= a < ndim and 0 <= b < ndim):
        raise ValueError(f"plane must name two different axes of {ndim}, got {plane}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    t = math.radians(angle_deg)
    linear = torch.eye(ndim, dtype=torch.float64)
    linear[a, a], linear[a, b], linear[b, a], linear[b, b] = math.cos(t), -math.sin(t), math.sin(t), math.cos(t)
    linear[[a, b]] /= scale
    half = torch.tensor([s * d / 2 for s, d in zip(shape, spacing)], dtype=torch.float64)
    linear = linear * half[None, :] / half[:, None]  # H^-1 R H / scale
    translation = torch.zeros(ndim, dtype=torch.float64)
    if shift is not None:
        translation[a], translation[b] = float(shift[0]), float(shift[1])
    theta = torch.cat([linear, translation[:, None]], 1)
    # affine_grid works in (x, y, z) = reversed array axes
    return theta.flip(0)[:, list(range(ndim))[::-1] + [ndim]].float() + 0.0  # + 0.0: no negative zeros


def affine_sampling_grid(theta: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The sampling grid ``(B, *shape, ndim)`` of ``theta`` (B, ndim, ndim + 1), ``align_corners=False``."""
    theta = theta.float()
    return F.affine_grid(theta, [theta.shape[0], 1, *shape], align_corners=False)


def affine_warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` (B, C, *spatial) on ``grid`` ((bi/tri)linear, zeros outside).

    Runs in float32 (float64 for float64 input) whatever the autocast state, as
    ``grid_sample`` does under CUDA autocast anyway; the grid never passes through float16.

    Examples
    --------
    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> grid = affine_sampling_grid(affine_matrix((4, 4), (1.0, 1.0))[None], (4, 4))
    >>> torch.equal(affine_warp(x, grid), x)  # identity
    True
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    with autocast_disabled(x.device):
        return F.grid_sample(x.to(dtype), grid.to(dtype), mode="bilinear", padding_mode="zeros",
                             align_corners=False)


def valid_sampling_mask(grid: torch.Tensor) -> torch.Tensor:
    """Output voxels whose sampling point lies among the input's voxel centres (B, *spatial), bool.

    Outside that range ``grid_sample`` mixes in its zero padding, so ``T(f(X))`` is not
    defined there.
    """
    shape = grid.shape[1:-1]
    # affine_grid's last axis is (x, y, z): the reversed array axes; voxel centres span [-1 + 1/n, 1 - 1/n]
    bound = torch.tensor([1 - 1 / n for n in reversed(shape)], dtype=grid.dtype, device=grid.device)
    return (grid.abs() <= bound + 1e-6).all(-1)


@dataclass(frozen=True)
class PlaneTransforms:
    """A batch of CLEF transforms, one per image, each acting in one plane of array axes.

    ``theta`` is what :func:`torch.nn.functional.affine_grid` takes; ``planes`` names the two
    array axes each transform acts on (the third axis, in 3D, is left as it is). Since the
    third axis is untouched, a 3D transform resamples every slice across it with the same 2D
    grid: :meth:`warp` does exactly that (bilinear on slices; on the CPU about 3.5 times
    faster than the trilinear warp on the full grid, with the same result up to rounding).

    Attributes
    ----------
    theta : (B, ndim, ndim + 1) torch.Tensor
        In ``affine_grid``'s (x, y[, z]) order (:func:`affine_matrix`).
    planes : tuple of (int, int)
        The plane of each transform, array axes, increasing.

    Examples
    --------
    >>> t = RandomPlaneAffine((2.0, 1.0, 1.0)).sample(2, (4, 6, 6), torch.Generator().manual_seed(0))
    >>> x = torch.randn(2, 3, 4, 6, 6)
    >>> bool(torch.allclose(t.warp(x), affine_warp(x, t.grid((4, 6, 6))), atol=1e-5))
    True
    """

    theta: torch.Tensor
    planes: Tuple[Tuple[int, int], ...]

    def to(self, device: torch.device) -> "PlaneTransforms":
        return PlaneTransforms(self.theta.to(device), self.planes)

    def grid(self, shape: Sequence[int]) -> torch.Tensor:
        """The full sampling grid ``(B, *shape, ndim)`` (:func:`affine_sampling_grid`)."""
        return affine_sampling_grid(self.theta, shape)

    def _slices(self, b: int, ndim: int) -> Tuple[torch.Tensor, list, int]:
        """2D theta of image ``b``, the permutation of (C, *spatial) putting its untouched axis first, that axis."""
        a, c = self.planes[b]
        k = ({0, 1, 2} - {a, c}).pop() if ndim == 3 else None
        r = [ndim - 1 - a, ndim - 1 - c]  # rows / columns of the plane's axes in theta's reversed order
        theta2 = self.theta[b][[r[1], r[0]]][:, [r[1], r[0], ndim]]
        perm = [1 + k, 0, 1 + a, 1 + c] if ndim == 3 else [0, 1, 2]
        return theta2, perm, k

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        """``T(x)`` for ``x`` (B, C, *spatial): bilinear on slices, zeros outside, float32 (float64 stays)."""
        if x.shape[0] != len(self.planes):
            raise ValueError(f"{len(self.planes)} transforms for a batch of {x.shape[0]}")
        ndim = x.ndim - 2
        if ndim == 2:
            return affine_warp(x, self.grid(x.shape[2:]).to(x.device))
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        out = []
        with autocast_disabled(x.device):
            for b in range(x.shape[0]):
                theta2, perm, k = self._slices(b, ndim)
                slices = x[b].permute(*perm).to(dtype)  # (S_k, C, S_a, S_c)
                grid = F.affine_grid(theta2[None].to(x.device, dtype), [1, 1, *slices.shape[2:]], align_corners=False)
                warped = F.grid_sample(slices, grid.expand(slices.shape[0], -1, -1, -1), mode="bilinear",
                                       padding_mode="zeros", align_corners=False)
                out.append(warped.permute(*[perm.index(i) for i in range(4)]))
        return torch.stack(out)

    def valid(self, shape: Sequence[int]) -> torch.Tensor:
        """:func:`valid_sampling_mask` of the transforms on a patch of ``shape`` (B, *shape), bool."""
        if len(shape) == 2:
            return valid_sampling_mask(self.grid(shape))
        masks = []
        for b in range(len(self.planes)):
            theta2, perm, k = self._slices(b, 3)
            plane_shape = [shape[perm[2] - 1], shape[perm[3] - 1]]
            mask = valid_sampling_mask(affine_sampling_grid(theta2[None], plane_shape))[0]
            mask = mask[None].expand(shape[k], -1, -1)  # axes (k, a, c)
            axes = [k, perm[2] - 1, perm[3] - 1]
            masks.append(mask.permute(*[axes.index(i) for i in range(3)]))
        return torch.stack(masks)


class RandomPlaneAffine(nn.Module):
    """CLEF's random affine ``T``: a random plane, rotation, magnification and shift per image.

    "We randomly sampled two of three axes, and applied a random transform in the
    corresponding plane ... a random scale in the range (1, 1.5), a random shift in the
    range (-0.1, 0.1) on each of the selected axes, and a random rotation in the range
    (-30, 30) degrees in the selected plane." 2D patches have one plane. See
    :func:`affine_matrix` for how each part is read. Where the paper is silent: the scale
    is a magnification (``T(X)`` shows a region 1/scale the size; read the other way, up to
    a third of each axis of ``T(X)`` would be zero padding, which the paper's whole-volume
    inputs suggest the authors did not intend); the rotation is a rotation of the anatomy
    (physical space, voxel spacing included), not of the voxel grid; the shift is in units
    of the patch's half-extent (``affine_grid``'s coordinates, where (-0.1, 0.1) reads as
    "up to 5 % of the patch").

    Parameters
    ----------
    spacing : sequence of float
        Voxel size of the patches, mm (the plan's spacing of the configuration).
    max_rotation_deg : float, optional
        Angles are uniform in ``[-max, max]``.
    scale_range : (float, float), optional
        Magnification, uniform.
    max_shift : float, optional
        Shifts are uniform in ``[-max, max]`` (normalised coordinates).

    Examples
    --------
    >>> t = RandomPlaneAffine((1.0, 1.0, 1.0))
    >>> t.sample(4, (8, 8, 8), generator=torch.Generator().manual_seed(0)).theta.shape
    torch.Size([4, 3, 4])
    """

    def __init__(self, spacing: Sequence[float], max_rotation_deg: float = 30.0,
                 scale_range: Tuple[float, float] = (1.0, 1.5), max_shift: float = 0.1):
        super().__init__()
        if len(spacing) not in (2, 3):
            raise ValueError(f"spacing needs 2 or 3 values, got {tuple(spacing)}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.spacing = tuple(float(s) for s in spacing)
        self.max_rotation_deg = float(max_rotation_deg)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.max_shift = float(max_shift)

    def sample(self, batch: int, shape: Sequence[int], generator: Optional[torch.Generator] = None) -> PlaneTransforms:
        """One random transform per image (on the CPU)."""
        ndim = len(shape)
        if ndim != len(self.spacing):
            raise ValueError(f"patch shape {tuple(shape)} does not fit spacing {self.spacing}")
        planes = [(0, 1)] if ndim == 2 else [(0, 1), (0, 2), (1, 2)]
        u = torch.rand(batch, 5, generator=generator, dtype=torch.float64)
        which = [planes[int(i)] for i in torch.randint(len(planes), (batch,), generator=generator)]
        lo, hi = self.scale_range
        theta = torch.stack([
            affine_matrix(shape, self.spacing, angle_deg=(2 * u[i, 0].item() - 1) * self.max_rotation_deg,
                          plane=which[i], scale=lo + (hi - lo) * u[i, 1].item(),
                          shift=((2 * u[i, 2].item() - 1) * self.max_shift, (2 * u[i, 3].item() - 1) * self.max_shift))
            for i in range(batch)])
        return PlaneTransforms(theta, tuple(which))

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> PlaneTransforms:
        """Random transforms for the batch ``x`` (B, C, *spatial), on ``x``'s device."""
        return self.sample(x.shape[0], x.shape[2:], generator).to(x.device)

    def extra_repr(self) -> str:
        return (f"spacing={self.spacing}, max_rotation_deg={self.max_rotation_deg}, "
                f"scale_range={self.scale_range}, max_shift={self.max_shift}")


def equivariance_loss(warped_features: torch.Tensor, features_of_warped: torch.Tensor,
                      valid: Optional[torch.Tensor] = None, normalize: bool = False) -> torch.Tensor:
    r"""CLEF's equivariance loss (Eq. 2), :math:`L_e = -\langle T(f(X)), f(T(X)) \rangle`.

    The inner product of the two feature maps is taken voxel by voxel and averaged over
    the voxels. CLEF's features are unit vectors (:class:`~nnunet_aux.heads.CLEFHead`),
    so ``L_e >= -1``; interpolation in ``T(f(X))`` shortens the vectors where neighbouring
    features differ, so the minimum -1 needs features that are equivariant *and* smooth.
    With ``normalize`` the cosine of the two vectors is used instead (minimum -1 for any
    equivariant features).

    Parameters
    ----------
    warped_features : (B, C, *spatial) torch.Tensor
        ``T(f(X))``: the features of ``X`` resampled on ``T``'s grid.
    features_of_warped : (B, C, *spatial) torch.Tensor
        ``f(T(X))``: the features of the resampled image.
    valid : (B, *spatial) torch.Tensor of bool, optional
        Voxels where ``T(f(X))`` is defined (:func:`valid_sampling_mask`); all when omitted.
    normalize : bool, optional
        Compare directions only (cosine similarity).

    Returns
    -------
    loss : torch.Tensor
        Scalar float32; 0 (attached to the graph) when no voxel is valid.

    References
    ----------
    .. [1] I. Kuleshov, M. Goncharov and V. Soboleva, "CLEF: Contrastive learning of
           equivariant features in CT images", Sect. 2.2, Eq. 2.

    Examples
    --------
    >>> f = torch.nn.functional.normalize(torch.randn(2, 4, 5, 5), dim=1)
    >>> equivariance_loss(f, f)  # aligned unit features: the minimum
    tensor(-1.)
    >>> equivariance_loss(f, 3 * f, normalize=True)
    tensor(-1.)
    """
    if warped_features.shape != features_of_warped.shape:
        raise ValueError(f"feature maps differ in shape: {tuple(warped_features.shape)} and "
                         f"{tuple(features_of_warped.shape)}")
    with autocast_disabled(warped_features.device):
        a, b = _float(warped_features), _float(features_of_warped)
        if normalize:
            a, b = F.normalize(a, dim=1, eps=_NORM_EPS), F.normalize(b, dim=1, eps=_NORM_EPS)
        dot = (a * b.to(a.dtype)).sum(1)
        if valid is None:
            return -dot.mean()
        if valid.shape != dot.shape:
            raise ValueError(f"valid must be (B, *spatial) = {tuple(dot.shape)}, got {tuple(valid.shape)}")
        valid = valid.to(dot.device)
        # no valid voxel: 0, still attached to the graph (and no device sync)
        return -(dot * valid).sum() / valid.sum().clamp_min(1)


class CLEFDiscriminativeLoss(nn.Module):
    """Module form of :func:`discriminative_loss` with its settings.

    Examples
    --------
    >>> loss = CLEFDiscriminativeLoss((1.0, 1.0), n_anchors=4, n_leaves=16)
    >>> bool(loss(torch.randn(1, 8, 32, 32)) >= 0)
    True
    """

    def __init__(self, spacing: Sequence[float], n_anchors: int = 32, n_leaves: int = 1024,
                 margin: float = -0.9, min_distance_mm: float = 10.0, reduction: str = "sum"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if n_anchors < 1 or n_leaves < 1:
            raise ValueError(f"need at least one anchor and one leaf, got {n_anchors} and {n_leaves}")
        if not -1 <= margin <= 1:
            raise ValueError(f"margin must lie in [-1, 1] (D is a negative cosine), got {margin}")
        self.spacing = tuple(float(s) for s in spacing)
        self.n_anchors, self.n_leaves = int(n_anchors), int(n_leaves)
        self.margin, self.min_distance_mm, self.reduction = float(margin), float(min_distance_mm), reduction

    def forward(self, features: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return discriminative_loss(features, self.spacing, self.n_anchors, self.n_leaves, self.margin,
                                   self.min_distance_mm, self.reduction, generator)


class CLEFEquivarianceLoss(nn.Module):
    """Eq. 2 for one batch: warp ``f(X)`` with the ``T`` that made ``T(X)`` and compare with ``f(T(X))``.

    ``T`` is a :class:`PlaneTransforms` or a sampling grid (:func:`affine_sampling_grid`):
    the image and the features are resampled on the same grid.

    Parameters
    ----------
    normalize : bool, optional
        Cosine instead of the inner product (:func:`equivariance_loss`).

    Examples
    --------
    >>> x = torch.randn(2, 3, 8, 8)
    >>> t = RandomPlaneAffine((1.0, 1.0))(x)
    >>> CLEFEquivarianceLoss(normalize=True)(x, t.warp(x), t)  # identity features: equivariant
    tensor(-1.)
    """

    def __init__(self, normalize: bool = False):
        super().__init__()
        self.normalize = bool(normalize)

    def forward(self, features: torch.Tensor, features_of_warped: torch.Tensor,
                transform: "PlaneTransforms | torch.Tensor") -> torch.Tensor:
        if isinstance(transform, PlaneTransforms):
            warped, valid = transform.warp(features), transform.valid(features.shape[2:])
        else:
            warped, valid = affine_warp(features, transform), valid_sampling_mask(transform)
        return equivariance_loss(warped, features_of_warped, valid.to(warped.device), self.normalize)
