"""What the trainer benchmarks share: a hand-written nnU-Net plan (no dataset needed), timing, FLOPs."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np


def make_plans(patch: Sequence[int], features: Sequence[int], batch_size: int, *,
               dataset_name: str = "Dataset999_BenchVessels", spacing: Sequence[float] = (1.0, 0.8, 0.8)) -> dict:
    """An nnU-Net plans dict with one 3d_fullres configuration (PlainConvUNet, nnU-Net's defaults).

    Strides halve every axis longer than 8 voxels at each stage after the first, as the
    planner does for near-isotropic patches.
    """
    n = len(features)
    strides, size = [[1, 1, 1]], np.array(patch)
    for _ in range(n - 1):
        s = [2 if d >= 8 else 1 for d in size]
        strides.append(s)
        size = size // np.array(s)
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n, "strides": strides, "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    spacing = [float(s) for s in spacing]
    return {
        "dataset_name": dataset_name, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": spacing, "original_median_shape_after_transp": list(patch),
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 281.0, "mean": 130.8, "median": 159.9, "min": -48.0, "percentile_00_5": -9.4,
            "percentile_99_5": 251.4, "std": 75.1}},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": batch_size, "patch_size": list(patch), "median_image_size_in_voxels": list(patch),
            "spacing": spacing, "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": arch, "batch_dice": False,
        }},
    }


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], object], device) -> float:
    """Wall seconds of ``function()``, CUDA-synchronised before and after."""
    _sync(device)
    start = time.perf_counter()
    function()
    _sync(device)
    return time.perf_counter() - start


def step_flops(trainer, batch) -> int:
    """Forward + backward FLOPs of one training step (convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step(batch)
    return int(counter.get_total_flops())
