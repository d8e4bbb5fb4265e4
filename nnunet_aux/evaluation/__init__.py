"""Evaluation of vessel segmentations: overlap, topology, surface distances, per-scale recall.

Pure numpy/scipy/scikit-image functions on boolean arrays (``spacing`` in mm per array
axis), plus folder evaluation of nnU-Net predictions (``nnunet_aux evaluate``).
"""

from .aggregate import summarize
from .cldice import cldice, mask_skeleton
from .components import count_components, missed_components
from .folder import evaluate_case, evaluate_folders
from .labels import LabelSpec, labels_from_dataset_json, parse_label_arguments, parse_scale_arguments, with_scales
from .metrics import VESSEL_METRIC_KEYS, vessel_metrics
from .overlap import dice_coefficient, jaccard_index
from .per_scale import scale_metrics
from .surface import directed_surface_distances, surface_distance_metrics, surface_voxels

__all__ = [
    "LabelSpec",
    "VESSEL_METRIC_KEYS",
    "cldice",
    "count_components",
    "dice_coefficient",
    "directed_surface_distances",
    "evaluate_case",
    "evaluate_folders",
    "jaccard_index",
    "labels_from_dataset_json",
    "mask_skeleton",
    "missed_components",
    "parse_label_arguments",
    "parse_scale_arguments",
    "scale_metrics",
    "summarize",
    "surface_distance_metrics",
    "surface_voxels",
    "vessel_metrics",
    "with_scales",
]
