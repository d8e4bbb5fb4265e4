"""Hand-written nnU-Net plans (3d_fullres and 2d, CPU-sized) for trainer tests without a dataset."""

from __future__ import annotations

import copy
from typing import Sequence

DATASET_JSON = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "image": 1},
    "numTraining": 2,
    "file_ending": ".nii.gz",
    "name": "CLEFPlans",
}


def _architecture(ndim: int, features: Sequence[int], strides) -> dict:
    n = len(features)
    conv = f"torch.nn.modules.conv.Conv{ndim}d"
    norm = f"torch.nn.modules.instancenorm.InstanceNorm{ndim}d"
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": list(features), "conv_op": conv,
            "kernel_sizes": [[3] * ndim] * n, "strides": strides, "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True, "norm_op": norm,
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _configuration(identifier: str, patch, spacing, features, strides, batch_size: int) -> dict:
    return {
        "data_identifier": identifier, "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch_size, "patch_size": list(patch), "median_image_size_in_voxels": list(patch),
        "spacing": list(spacing), "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": _architecture(len(patch), features, strides), "batch_dice": False,
    }


def make_plans(patch3d=(8, 16, 16), spacing3d=(3.0, 1.5, 1.5), features=(4, 8, 16), batch_size: int = 2,
               dataset_name: str = "Dataset977_CLEFPlans") -> dict:
    """A plans dict with a 3d_fullres and a 2d configuration (PlainConvUNet, nnU-Net's format)."""
    n = len(features)
    strides3d = [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
    strides2d = [[1, 1]] + [[2, 2]] * (n - 1)
    return copy.deepcopy({
        "dataset_name": dataset_name, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing3d), "original_median_shape_after_transp": list(patch3d),
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 281.0, "mean": 130.8, "median": 159.9, "min": -48.0, "percentile_00_5": -9.4,
            "percentile_99_5": 251.4, "std": 75.1}},
        "configurations": {
            "3d_fullres": _configuration("nnUNetPlans_3d_fullres", patch3d, spacing3d, features, strides3d, batch_size),
            "2d": _configuration("nnUNetPlans_2d", patch3d[1:], spacing3d[1:], features, strides2d, batch_size),
        },
    })
