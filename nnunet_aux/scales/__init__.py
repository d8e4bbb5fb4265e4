"""Vessel scale decomposition (Sadikine et al., Sect. 2.1).

Split a binary vessel tree into branches, estimate each branch's radius, and label
every vessel voxel with the scale of its branch (1 = smallest ... S = largest).

    >>> from nnunet_aux.scales import decompose_vessels
    >>> result = decompose_vessels(mask, spacing=(1.0, 0.7, 0.7))   # doctest: +SKIP
    >>> result.labels, result.thresholds_mm, result.branches         # doctest: +SKIP
"""

from .branches import SkeletonBranches, split_branches
from .cross_section import cross_section_radii
from .decomposition import (
    NEAREST_SKELETON,
    RADIUS_ESTIMATES,
    Branch,
    ScaleDecomposition,
    assign_scales,
    decompose_vessels,
)
from .moments import moment_radii
from .radius import RADIUS_CORRECTIONS, centreline_directions, local_radii
from .skeleton import component_centreline
from .surface import vessel_surface
from .thresholds import default_quantiles, quantile_thresholds, scale_of_radius

__all__ = [
    "Branch",
    "NEAREST_SKELETON",
    "RADIUS_CORRECTIONS",
    "RADIUS_ESTIMATES",
    "ScaleDecomposition",
    "SkeletonBranches",
    "assign_scales",
    "centreline_directions",
    "component_centreline",
    "cross_section_radii",
    "decompose_vessels",
    "default_quantiles",
    "local_radii",
    "moment_radii",
    "quantile_thresholds",
    "scale_of_radius",
    "split_branches",
    "vessel_surface",
]
