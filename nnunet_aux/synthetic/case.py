"""One synthetic CT case: image, vessel tree ground truth and scale labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..scales import quantile_thresholds, scale_of_radius
from ..validation import check_n_scales, check_seed, check_spacing, label_dtype
from .image import ct_image, organ_fraction, tumour_blobs
from .organ import Ellipsoid, random_organ_ellipsoid
from .presets import SyntheticPreset, get_preset
from .rasterize import rasterize_segments, slice_profile_fraction
from .tree import Segment, _check_shape, generate_tree


@dataclass(eq=False)
class SyntheticCase:
    """A synthetic CT volume with its vessel tree and ground truth.

    All arrays have the volume's shape ``(nz, ny, nx)``.

    Attributes
    ----------
    image : ndarray of float32
        CT-like intensities in HU.
    mask : ndarray of bool
        Vessel mask.
    radius_mm : ndarray of float32
        True radius of the segment each vessel voxel belongs to, 0 outside vessels.
    segment_id : ndarray of int32
        ``1..len(segments)`` on vessel voxels, 0 elsewhere.
    scale : ndarray of uint8
        Scale ``1..n_scales`` (1 = thinnest) of each vessel voxel, 0 elsewhere.
    thresholds_mm : ndarray of float64
        The ``n_scales - 1`` radius thresholds between scales.
    tumour : ndarray of bool
        Tumour mask; never overlaps ``mask``.
    organ : ndarray of bool
        Organ (liver) mask.
    segments : list of Segment
        The tree; ``segments[i].id == i + 1``, ``n_voxels`` filled in.
    spacing : tuple of float
        Voxel size ``(sz, sy, sx)`` in mm.
    organ_ellipsoid : Ellipsoid
        The ellipsoid the tree was grown in.
    """

    image: np.ndarray
    mask: np.ndarray
    radius_mm: np.ndarray
    segment_id: np.ndarray
    scale: np.ndarray
    thresholds_mm: np.ndarray
    tumour: np.ndarray
    organ: np.ndarray
    segments: list[Segment]
    spacing: tuple[float, float, float]
    organ_ellipsoid: Ellipsoid

    @property
    def n_scales(self) -> int:
        """Number of vessel scales."""
        return len(self.thresholds_mm) + 1

    def labels(self) -> np.ndarray:
        """Label map of the package's data contract.

        Returns
        -------
        labels : ndarray of uint8
            Vessel voxels carry their scale ``1..S``, tumour voxels ``S + 1``,
            everything else 0.

        Examples
        --------
        >>> case = generate_case((32, 64, 64), (1.0, 0.8, 0.8), seed=0, n_tumours=1)
        >>> lab = case.labels()
        >>> sorted(np.unique(lab).tolist())
        [0, 1, 2, 3, 4]
        """
        labels = self.scale.copy()
        labels[self.tumour & ~self.mask] = self.n_scales + 1
        return labels


def generate_case(
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    seed: int | np.random.Generator | None = 0,
    n_scales: int = 3,
    tumours: bool = True,
    root_radius_mm: float | None = None,
    min_radius_mm: float = 0.7,
    *,
    curved: bool = True,
    n_tumours: int | None = None,
    noise_hu: float | None = None,
    max_segments: int = 2000,
    preset: str | SyntheticPreset = "demo",
) -> SyntheticCase:
    """Generate a synthetic contrast-enhanced CT case with a vessel tree.

    A liver-like ellipsoid is drawn, a Murray's-law tree grown inside it
    (:func:`~nnunet_aux.synthetic.tree.generate_tree`) and rasterised
    (:func:`~nnunet_aux.synthetic.rasterize.rasterize_segments`; where vessels overlap,
    the nearest centreline wins). Scales come from the true segment radii: the
    thresholds are :func:`nnunet_aux.scales.quantile_thresholds` of the radii of the
    segments that have at least one voxel, each counted once, and each voxel gets
    :func:`nnunet_aux.scales.scale_of_radius` of its segment's radius. Tumours are
    hypodense blobs inside the organ; vessels win where the two overlap.

    The image regime (tissue intensities, noise, slice profile and blur, default
    shape and spacing) comes from a preset (:mod:`nnunet_aux.synthetic.presets`):
    ``"demo"`` (the default, easy: contrast-to-noise 4-5, near-isotropic voxels) or
    ``"clinical"`` (calibrated to portal-venous liver CT: 2 mm slices, the thinnest
    vessels near the noise floor). Tree, ground truth and scales do not depend on it.

    Parameters
    ----------
    shape : sequence of 3 int, optional
        Volume shape ``(nz, ny, nx)``; the preset's if not given.
    spacing : sequence of 3 float, optional
        Voxel size ``(sz, sy, sx)`` in mm; the preset's if not given.
    seed : int or numpy.random.Generator, optional
        Random seed; the same seed gives identical arrays. Organ, tree, tumours and
        image draw from separate streams, so e.g. ``tumours=False`` keeps the tree.
    n_scales : int, optional
        Number of vessel scales, at least 2.
    tumours : bool, optional
        Whether to add tumour blobs.
    root_radius_mm : float, optional
        Radius of the root vessel; by default it grows with the volume's physical
        size up to 8 mm (:func:`~nnunet_aux.synthetic.tree.default_root_radius`).
    min_radius_mm : float, optional
        Smallest vessel radius.
    curved : bool, optional
        Smoothly bent vessels if True, straight segments otherwise.
    n_tumours : int, optional
        Number of tumour blobs (1 to 3 at random if not given); ignored without
        ``tumours``.
    noise_hu : float, optional
        Standard deviation of the image noise in HU; the preset's if not given.
    max_segments : int, optional
        Upper bound on the number of tree segments.
    preset : str or SyntheticPreset, optional
        Image regime, a name in :data:`nnunet_aux.synthetic.PRESETS` or a preset.

    Returns
    -------
    case : SyntheticCase

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning
           for deep liver vessel segmentation", ISBI 2023, Sect. 2.1 (hypothesis H:
           one constant radius per branch; scales split at radius quantiles).
    .. [2] C. D. Murray, "The physiological principle of minimum work: I. The vascular
           system and the cost of blood volume", PNAS 12(3):207-214, 1926.
    .. [3] Sources of the ``clinical`` preset's numbers: see
           :mod:`nnunet_aux.synthetic.presets`.

    Raises
    ------
    InputError
        For an unknown preset name.

    Examples
    --------
    >>> case = generate_case((32, 64, 64), (1.0, 0.8, 0.8), seed=1)
    >>> case.image.dtype, case.mask.shape, case.n_scales
    (dtype('float32'), (32, 64, 64), 3)
    >>> bool(np.all((case.radius_mm > 0) == case.mask))
    True
    >>> bool(case.image[case.mask].mean() > case.image[case.organ & ~case.mask].mean())
    True
    >>> generate_case((16, 48, 48), seed=0, preset="clinical").spacing
    (2.0, 0.8, 0.8)
    """
    regime = get_preset(preset)
    shape = _check_shape(regime.shape if shape is None else shape)
    spacing = check_spacing(regime.spacing if spacing is None else spacing)
    noise_hu = regime.noise_hu if noise_hu is None else noise_hu
    n_scales = check_n_scales(n_scales)
    if seed is not None and not isinstance(seed, np.random.Generator):
        seed = check_seed(seed)
    organ_rng, tree_rng, tumour_rng, image_rng = np.random.default_rng(seed).spawn(4)

    ellipsoid = random_organ_ellipsoid(shape, spacing, seed=organ_rng)
    segments = generate_tree(shape, spacing, seed=tree_rng, organ=ellipsoid, root_radius_mm=root_radius_mm,
                             min_radius_mm=min_radius_mm, curved=curved, max_segments=max_segments)
    segment_id, vessel_fraction = rasterize_segments(segments, shape, spacing)
    mask = segment_id > 0

    # Per-segment tables indexed by segment id, applied to the (sparse) vessel voxels.
    in_vessel = np.flatnonzero(mask)
    ids = segment_id.reshape(-1)[in_vessel]
    counts = np.bincount(ids, minlength=len(segments) + 1)
    radii = np.array([0.0] + [s.radius_mm for s in segments])
    for s in segments:
        s.n_voxels = int(counts[s.id])
    thresholds = quantile_thresholds(radii[1:][counts[1:] > 0], n_scales)
    scale = np.zeros(shape, dtype=label_dtype(n_scales))
    scale.reshape(-1)[in_vessel] = scale_of_radius(radii, thresholds)[ids]
    radius_mm = np.zeros(shape, dtype=np.float32)
    radius_mm.reshape(-1)[in_vessel] = radii[ids]

    organ_soft = organ_fraction(ellipsoid, shape, spacing, seed=organ_rng)
    organ = organ_soft >= 0.5
    if tumours:
        tumour = tumour_blobs(organ, spacing, n_tumours=n_tumours, seed=tumour_rng)
        tumour.reshape(-1)[in_vessel] = False
    else:
        tumour = np.zeros(shape, dtype=bool)
    if regime.slice_fwhm > 0:
        # Through-plane partial volume: the image sees the vessels through the slice profile.
        vessel_fraction = slice_profile_fraction(segments, shape, spacing,
                                                 slice_fwhm_mm=regime.slice_fwhm * spacing[0])
    image = ct_image(organ_soft, vessel_fraction, tumour, seed=image_rng, noise_hu=noise_hu,
                     parenchyma_hu=regime.parenchyma_hu, vessel_hu_range=regime.vessel_hu_range,
                     bias_gain=regime.bias_gain, bias_offset_hu=regime.bias_offset_hu, spacing=spacing,
                     psf_fwhm_mm=regime.psf_fwhm_mm, noise_fwhm_mm=regime.noise_fwhm_mm)
    return SyntheticCase(image=image, mask=mask, radius_mm=radius_mm, segment_id=segment_id, scale=scale,
                         thresholds_mm=thresholds, tumour=tumour, organ=organ, segments=segments,
                         spacing=spacing, organ_ellipsoid=ellipsoid)
