"""A small network plan for the demo, derived from the plan nnU-Net made for the dataset.

nnU-Net's plans are JSON files in the preprocessed dataset folder; a copy under a new
``plans_name`` is trained with ``nnUNetv2_train ... -p <plans_name>``. Keeping the
configuration's ``data_identifier`` makes the copy reuse the preprocessed data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import InputError


def _positive_ints(name: str, values: Sequence[int], length: int | None = None) -> list[int]:
    values = [int(v) for v in values]
    if not values or any(v < 1 for v in values):
        raise InputError(f"{name} must hold positive integers, got {values}")
    if length is not None and len(values) != length:
        raise InputError(f"{name} needs {length} values, got {len(values)}: {values}")
    return values


def _cut_stages(arch: dict[str, Any], features: list[int]) -> None:
    """Keep the first ``len(features)`` stages of the plan's network, with ``features`` maps each."""
    n_stages = len(features)
    if n_stages < 2 or n_stages > arch["n_stages"]:
        raise InputError(f"features_per_stage needs 2..{arch['n_stages']} stages (the plan's), got {n_stages}")
    arch["n_stages"] = n_stages
    arch["features_per_stage"] = features
    for key in ("kernel_sizes", "strides", "n_conv_per_stage"):
        arch[key] = arch[key][:n_stages]
    arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][:n_stages - 1]


def _fitting_patch(patch_size: Sequence[int], strides: Sequence[Sequence[int]], dims: int) -> list[int]:
    """The patch size, checked: every stride must divide it, or the decoder's skip connections misalign."""
    patch = _positive_ints("patch_size", patch_size, dims)
    total = [1] * len(patch)
    for stride in strides:
        total = [t * s for t, s in zip(total, stride)]
    if any(p % t for p, t in zip(patch, total)):
        raise InputError(f"patch_size {patch} must be divisible by the network's total stride {total}")
    return patch


def small_plans(
    plans: Mapping[str, Any],
    plans_name: str,
    features_per_stage: Sequence[int],
    *,
    patch_size: Sequence[int] | None = None,
    batch_size: int = 2,
    configuration: str = "3d_fullres",
) -> dict[str, Any]:
    """A copy of an nnU-Net plan with a smaller U-Net, patch and batch.

    Only ``configuration`` is kept. The number of stages is ``len(features_per_stage)``:
    nnU-Net's per-stage lists (kernel sizes, strides, convolutions per stage) are cut to
    that length, so a shorter list also gives a shallower network. The patch size must
    stay divisible by the product of the kept strides.

    Parameters
    ----------
    plans : mapping
        Content of ``nnUNetPlans.json`` written by ``nnUNetv2_plan_and_preprocess``.
    plans_name : str
        The new plan's name (``-p`` of ``nnUNetv2_train``).
    features_per_stage : sequence of int
        Feature maps per encoder stage, e.g. ``(16, 32, 64, 128)``.
    patch_size : sequence of int, optional
        Training patch size; default: the plan's.
    batch_size : int, optional
        Patches per training step.
    configuration : str, optional
        The configuration to keep.

    Returns
    -------
    plans : dict
        The new plan; ``data_identifier`` is unchanged, so it reuses the preprocessed data.

    Examples
    --------
    >>> arch = {"n_stages": 3, "features_per_stage": [32, 64, 128],
    ...         "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    ...         "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2]}
    >>> plans = {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {
    ...     "data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2, "patch_size": [32, 64, 64],
    ...     "architecture": {"arch_kwargs": arch}}}}
    >>> small = small_plans(plans, "nnUNetPlans_demo", (8, 16), patch_size=(16, 32, 32))
    >>> cfg = small["configurations"]["3d_fullres"]
    >>> cfg["architecture"]["arch_kwargs"]["strides"], cfg["patch_size"], cfg["data_identifier"]
    ([[1, 1, 1], [2, 2, 2]], [16, 32, 32], 'nnUNetPlans_3d_fullres')
    """
    if configuration not in plans.get("configurations", {}):
        raise InputError(f"the plans have no configuration {configuration!r}; "
                         f"found {sorted(plans.get('configurations', {}))}")
    out = json.loads(json.dumps(plans))  # deep copy that keeps it plain JSON
    config = out["configurations"][configuration]
    out["configurations"] = {configuration: config}
    out["plans_name"] = str(plans_name)
    arch = config["architecture"]["arch_kwargs"]
    _cut_stages(arch, _positive_ints("features_per_stage", features_per_stage))
    if patch_size is not None:
        config["patch_size"] = _fitting_patch(patch_size, arch["strides"], len(config["patch_size"]))
    config["batch_size"] = _positive_ints("batch_size", [batch_size])[0]
    return out


def write_small_plans(
    preprocessed_dataset_folder: str | os.PathLike,
    plans_name: str,
    features_per_stage: Sequence[int],
    *,
    source_plans: str = "nnUNetPlans",
    **kwargs: Any,
) -> Path:
    """Write :func:`small_plans` of ``<source_plans>.json`` as ``<plans_name>.json`` beside it.

    Parameters
    ----------
    preprocessed_dataset_folder : path-like
        ``$nnUNet_preprocessed/DatasetXXX_Name``.
    plans_name : str
        Name of the new plan (and file).
    features_per_stage : sequence of int
        See :func:`small_plans`.
    source_plans : str, optional
        The plan to start from.
    **kwargs
        Passed to :func:`small_plans`.

    Returns
    -------
    path : Path
        The written plans file.
    """
    folder = Path(preprocessed_dataset_folder)
    source = folder / f"{source_plans}.json"
    if not source.is_file():
        raise InputError(f"no plans file {source}; run nnUNetv2_plan_and_preprocess first")
    with open(source, encoding="utf-8") as f:
        plans = json.load(f)
    new = small_plans(plans, plans_name, features_per_stage, **kwargs)
    target = folder / f"{plans_name}.json"
    with open(target, "w", encoding="utf-8") as f:
        json.dump(new, f, indent=2)
    return target


def write_splits(preprocessed_dataset_folder: str | os.PathLike, train: Sequence[str], val: Sequence[str]) -> Path:
    """Write nnU-Net's ``splits_final.json`` with a single fold (fold 0).

    Parameters
    ----------
    preprocessed_dataset_folder : path-like
        ``$nnUNet_preprocessed/DatasetXXX_Name``.
    train, val : sequence of str
        Case identifiers of fold 0's training and validation cases.

    Returns
    -------
    path : Path
        The written ``splits_final.json``.
    """
    train, val = [str(c) for c in train], [str(c) for c in val]
    if not train or not val:
        raise InputError(f"a split needs training and validation cases, got {len(train)} and {len(val)}")
    if set(train) & set(val):
        raise InputError(f"cases in both training and validation: {sorted(set(train) & set(val))}")
    path = Path(preprocessed_dataset_folder) / "splits_final.json"
    with open(path, "w", encoding="utf-8") as f:
        json.dump([{"train": train, "val": val}], f, indent=2)
    return path
