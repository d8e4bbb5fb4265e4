"""Synthetic vascular trees with known radii, rasterised with a CT-like image.

Trees branch by Murray's law (``r0^3 = r1^3 + r2^3``) inside a liver-like ellipsoid;
every segment has one constant radius, so the scale of each vessel voxel is known
exactly. Used for demos and to test the scale decomposition against known answers.
Presets (:mod:`~nnunet_aux.synthetic.presets`) set the image regime: ``demo`` (easy,
near-isotropic) or ``clinical`` (calibrated to portal-venous liver CT).

>>> from nnunet_aux.synthetic import generate_case
>>> case = generate_case((32, 64, 64), (1.0, 0.8, 0.8), seed=0)
>>> case.labels().dtype
dtype('uint8')
"""

from .case import SyntheticCase, generate_case
from .image import ct_image, organ_fraction, tumour_blobs
from .organ import Ellipsoid, random_organ_ellipsoid, smooth_random_field
from .presets import PRESETS, SyntheticPreset, get_preset
from .rasterize import rasterize_segments, slice_profile_fraction
from .tree import (
    Segment,
    default_root_radius,
    generate_tree,
    murray_branching_angles,
    murray_child_radii,
)

__all__ = [
    "PRESETS",
    "Ellipsoid",
    "Segment",
    "SyntheticCase",
    "SyntheticPreset",
    "ct_image",
    "default_root_radius",
    "generate_case",
    "generate_tree",
    "get_preset",
    "murray_branching_angles",
    "murray_child_radii",
    "organ_fraction",
    "random_organ_ellipsoid",
    "rasterize_segments",
    "slice_profile_fraction",
    "smooth_random_field",
    "tumour_blobs",
]
