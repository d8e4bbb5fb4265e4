"""Evaluation of one fold's validation predictions, cached in a JSON file.

nnU-Net's final validation writes one prediction per validation case into
``fold_X/validation/``. These are compared with nnU-Net's own copy of the references,
``$nnUNet_preprocessed/DatasetXXX/gt_segmentations/`` (the raw labels, same grid), by
:func:`nnunet_aux.evaluation.evaluate_folders`. The result is cached: it is reused as long
as it is newer than nnU-Net's ``validation/summary.json`` (rewritten by every
validation) and covers the same cases.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ..dataset_format import write_json_atomic
from ..errors import InputError


def _write_json_atomically(path: Path, data: Any) -> None:
    # A killed run must not leave a half-written cache that a resumed run would trust.
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(data, path, allow_nan=False)


def _cached(cache_json: Path, validation_summary: Path, cases: Sequence[str]) -> dict[str, Any] | None:
    if not cache_json.is_file() or cache_json.stat().st_mtime < validation_summary.stat().st_mtime:
        return None
    try:
        with open(cache_json, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    if sorted(c["case"] for c in summary.get("metric_per_case", [])) != sorted(cases):
        return None
    return summary


def evaluate_fold(
    fold_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    cache_json: str | os.PathLike,
    dataset_json: str | os.PathLike,
    cases: Sequence[str] | None = None,
    *,
    num_processes: int | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Evaluate a fold's validation predictions against the references, or reuse the cache.

    Parameters
    ----------
    fold_dir : path-like
        nnU-Net's ``fold_X`` folder with ``validation/summary.json`` and the predictions.
    gt_dir : path-like
        ``$nnUNet_preprocessed/DatasetXXX/gt_segmentations``.
    cache_json : path-like
        Where the evaluation summary is (or will be) kept; a per-case CSV is written
        beside it.
    dataset_json : path-like
        The dataset's ``dataset.json`` (labels, regions, scales).
    cases : sequence of str, optional
        The fold's validation cases (from ``splits_final.json``). Every one must have a
        prediction: a case nnU-Net did not predict is an error, never left out. Default:
        the cases that have a prediction.
    num_processes : int, optional
        Worker processes of the evaluation.
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    summary : dict
        As from :func:`nnunet_aux.evaluation.evaluate_folders`.
    reused : bool
        Whether the cached evaluation was used.

    Raises
    ------
    InputError
        For a missing validation folder, prediction or reference.
    """
    from ..evaluation import evaluate_folders
    from ..evaluation.folder import write_csv
    from ..evaluation.io import find_cases
    from ..evaluation.labels import labels_from_dataset_json

    fold_dir, gt_dir, cache_json = Path(fold_dir), Path(gt_dir), Path(cache_json)
    validation_dir = fold_dir / "validation"
    validation_summary = validation_dir / "summary.json"
    if not validation_summary.is_file():
        raise InputError(f"{validation_summary} does not exist: nnU-Net's validation of this fold has not run")
    predictions = find_cases(validation_dir)
    cases = sorted(predictions) if cases is None else sorted(cases)
    if not cases:
        raise InputError(f"no predictions in {validation_dir}")
    missing = [c for c in cases if c not in predictions]
    if missing:
        raise InputError(f"{validation_dir} has no prediction for validation case(s) {missing}; "
                         "rerun the validation (nnUNetv2_train ... --val)")
    references = find_cases(gt_dir)
    missing = [c for c in cases if c not in references]
    if missing:
        raise InputError(f"{gt_dir} has no reference for case(s) {missing}")

    cached = _cached(cache_json, validation_summary, cases)
    if cached is not None:
        return cached, True

    # evaluate_folders evaluates every reference in a folder; give it a folder holding
    # just this fold's validation cases.
    cache_json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".references_", dir=cache_json.parent) as tmp:
        for case in cases:
            source = references[case]
            target = os.path.join(tmp, os.path.basename(source))
            try:
                os.symlink(source, target)
            except OSError:  # no symlinks (some Windows setups, some file systems)
                shutil.copyfile(source, target)
        summary = evaluate_folders(tmp, validation_dir, None, dataset_json=dataset_json,
                                   num_processes=num_processes, csv=False, progress=progress)
    summary["reference_folder"] = str(gt_dir)
    for case in summary["metric_per_case"]:
        case["reference_file"] = references[case["case"]]
    _write_json_atomically(cache_json, summary)
    write_csv(cache_json.with_suffix(".csv"), summary["metric_per_case"], labels_from_dataset_json(dataset_json))
    return summary, False
