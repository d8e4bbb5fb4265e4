"""Tubed ground-truth skeletons as extra target channels (Skeleton Recall, Kirchhoff et al. 2024).

The skeleton of each structure is computed on the CPU, in nnU-Net's augmentation workers,
after all spatial transforms (so that it is the skeleton of the augmented patch, not a
rotated or rescaled skeleton) and before deep-supervision downsampling (so that every
output level gets its own downsampled copy, like the other target channels).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import SegOnlyTransform
from scipy import ndimage
from skimage.morphology import skeletonize

#: Kirchhoff et al.'s tube: the skeleton dilated twice with the cross-shaped footprint
#: (``SkeletonTransform(do_tube=True)``, ``get_tube_footprint``: ``iterate_structure(cross, 2)``, in
#: MIC-DKFZ/Skeleton-Recall 1.0.0, skeleton_recall/training/data_augmentation/skeletonization.py)
PAPER_TUBE_RADIUS = 2
#: How the structures' skeletons are made. ``"union"``: skeleton-recall 1.0.0's ``SkeletonTransform._add_skeleton``
#: (skeletonization.py, lines 31-41): one skeleton of the union ``seg > 0`` (the ignore label included), dilated into
#: a tube and multiplied by the label map, so each structure gets the part of the common tube inside it.
#: ``"per_structure"`` (a package setting): each structure skeletonised on its own. They agree on isolated
#: structures; on two labels that touch along a tube the union's skeleton runs along the contact.
SKELETON_TARGET_MODES = ("union", "per_structure")
PAPER_SKELETON_TARGET = "union"


def tubed_skeleton(mask: np.ndarray, tube_radius: int = PAPER_TUBE_RADIUS) -> np.ndarray:
    """Skeleton of a binary mask, widened into a tube and kept inside the mask.

    2D masks get scikit-image's 2D thinning (Zhang), 3D masks its 3D thinning (Lee). The
    tube is ``tube_radius`` binary dilations with the cross-shaped (4- or 6-connected)
    footprint, cut to the mask, as Kirchhoff et al.'s code does (``skel * seg``). The work
    is bounded by the mask's bounding box.

    Parameters
    ----------
    mask : ndarray of bool, 2D or 3D
    tube_radius : int
        Dilations of the skeleton; 0 gives the bare skeleton.

    Returns
    -------
    ndarray of bool, the shape of ``mask``

    References
    ----------
    .. [1] Y. Kirchhoff et al., "Skeleton Recall Loss for connectivity conserving and resource
           efficient segmentation of thin tubular structures", ECCV 2024, arXiv:2404.03010,
           Sect. 3.1 (tubed skeleton).

    Examples
    --------
    >>> bar = np.zeros((5, 11), bool)
    >>> bar[1:4, 1:10] = True
    >>> tubed_skeleton(bar, 0)[2, 1:8].astype(int)  # the middle row of a 3-pixel-thick bar
    array([1, 1, 1, 1, 1, 1, 1])
    >>> bool(tubed_skeleton(bar, 1)[bar == 0].any())  # the tube stays inside the structure
    False
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D mask, got shape {mask.shape}")
    if tube_radius < 0:
        raise ValueError(f"tube_radius must be non-negative, got {tube_radius!r}")
    out = np.zeros_like(mask)
    if not mask.any():
        return out
    # bounding box with one voxel of background around it (thinning looks at 3^n neighbourhoods)
    lo, hi = [], []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo.append(max(int(present[0]) - 1, 0))
        hi.append(min(int(present[-1]) + 2, mask.shape[axis]))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    crop = mask[box]
    skeleton = skeletonize(crop)
    if tube_radius > 0 and skeleton.any():
        footprint = ndimage.generate_binary_structure(mask.ndim, 1)
        skeleton = ndimage.binary_dilation(skeleton, structure=footprint, iterations=tube_radius)
    out[box] = skeleton & crop
    return out


class SkeletonTargetTransform(SegOnlyTransform):
    """Insert one tubed-skeleton channel per structure into nnU-Net's segmentation target.

    Either ``labels`` (label-map targets: structure k is the voxels of ``seg[0]`` whose value
    is in ``labels[k]``) or ``channels`` (region targets after nnU-Net's region conversion:
    structure k is binary channel ``channels[k]``) is given.

    Parameters
    ----------
    labels : sequence of tuple of int, optional
        Label values of each structure.
    channels : sequence of int, optional
        Binary segmentation channels holding each structure.
    tube_radius : int
        See :func:`tubed_skeleton`.
    mode : {"union", "per_structure"}
        ``"union"`` (skeleton-recall 1.0.0): the tubed skeleton of the union of all structures (label
        datasets: every voxel with ``seg[0] > 0``, nnU-Net's ignore label included, as their
        ``bin_seg = seg > 0``; region datasets: the union of ``channels``), cut to each structure.
        ``"per_structure"``: each structure's own tubed skeleton.
    insert_at : int, optional
        Channel index at which the skeleton channels are inserted (None: appended). Region
        targets keep nnU-Net's ignore channel last, so the trainer inserts before it.
    """

    def __init__(self, labels: Optional[Sequence[Tuple[int, ...]]] = None, channels: Optional[Sequence[int]] = None,
                 tube_radius: int = PAPER_TUBE_RADIUS, insert_at: Optional[int] = None,
                 mode: str = PAPER_SKELETON_TARGET):
        super().__init__()
        if (labels is None) == (channels is None):
            raise ValueError("give exactly one of labels and channels")
        if mode not in SKELETON_TARGET_MODES:
            raise ValueError(f"mode must be one of {SKELETON_TARGET_MODES}, got {mode!r}")
        self.mode = mode
        self.labels = None if labels is None else [tuple(int(v) for v in group) for group in labels]
        self.channels = None if channels is None else [int(c) for c in channels]
        self.tube_radius = int(tube_radius)
        self.insert_at = insert_at

    def masks(self, segmentation: torch.Tensor) -> List[np.ndarray]:
        """The binary mask of each structure (numpy, spatial shape)."""
        if self.labels is not None:
            labels = segmentation[0].numpy()
            return [np.isin(labels, values) for values in self.labels]
        return [segmentation[c].numpy().astype(bool) for c in self.channels]

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        if isinstance(segmentation, (list, tuple)):
            raise TypeError("SkeletonTargetTransform must run before deep-supervision downsampling")
        masks = self.masks(segmentation)
        if self.mode == "union":
            union = (segmentation[0].numpy() > 0) if self.labels is not None else np.any(masks, 0)
            tube = tubed_skeleton(union, self.tube_radius)
            skeletons = np.stack([tube & m for m in masks])
        else:
            skeletons = np.stack([tubed_skeleton(m, self.tube_radius) for m in masks])
        skeletons = torch.from_numpy(skeletons).to(segmentation.dtype)
        at = segmentation.shape[0] if self.insert_at is None else self.insert_at
        return torch.cat((segmentation[:at], skeletons, segmentation[at:]), 0)
