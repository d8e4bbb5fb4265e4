"""Write a scale-decomposed dataset: atomically, in parallel, with a report.

Every converter (nnU-Net raw dataset, MSD, 3D-IRCADb, synthetic) describes its cases as
:class:`CaseJob` objects whose ``reader`` loads one case into a :class:`LoadedCase`; this
module decomposes the structure into scales, renumbers the other labels, writes the
files into a temporary sibling folder and renames it into place at the end.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from ..dataset_format import REPORT_FILENAME, scale_names, write_dataset_json, write_json_atomic
from ..errors import InputError, warn
from ..io.files import dataset_id_lock
from ..io.images import Geometry, link_or_copy, write_array, write_image
from ..parallel import run_parallel
from ..validation import check_choice, check_n_scales, check_positive_int, check_quantile_levels, check_thresholds
from .labels import LabelPlan
from .paths import check_target_free, raw_root, split_dataset_name
from .staging import staged_folder

THRESHOLD_MODES = ("quantile", "dataset", "fixed")


@dataclass(frozen=True)
class DecompositionSettings:
    """How vessel voxels are split into scales.

    Attributes
    ----------
    n_scales : int
        Number of scales ``S``.
    m_neighbours : int
        Neighbouring centreline points per radius estimate (the paper's ``p = 8``).
    thresholds : {'quantile', 'dataset', 'fixed'}
        ``'quantile'``: quantiles of each volume's branch radii (the paper);
        ``'dataset'``: quantiles of the branch radii of all training volumes together,
        applied to every volume (test volumes too); ``'fixed'``: ``fixed_radii_mm``.
    fixed_radii_mm : tuple of float or None
        The ``S - 1`` thresholds for ``'fixed'``.
    quantiles : tuple of float or None
        Quantile levels for the two quantile modes; default
        :func:`nnunet_aux.scales.default_quantiles`.
    """

    n_scales: int = 3
    m_neighbours: int = 8
    thresholds: str = "quantile"
    fixed_radii_mm: tuple[float, ...] | None = None
    quantiles: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # The entry point of the conversions' settings (the command line builds them too):
        # checked here once, with the rules of nnunet_aux.validation.
        check_n_scales(self.n_scales)
        check_choice(self.thresholds, THRESHOLD_MODES, "thresholds")
        check_positive_int(self.m_neighbours, "m_neighbours")
        if self.thresholds == "fixed":
            check_thresholds(self.fixed_radii_mm, self.n_scales, what="radii")
        elif self.fixed_radii_mm is not None:
            raise InputError("fixed radii given, but the threshold mode is not 'fixed'")
        if self.quantiles is not None:
            check_quantile_levels(self.quantiles, self.n_scales)


@dataclass
class LoadedCase:
    """One case as a converter's reader hands it to the writer.

    Attributes
    ----------
    images : list of Path or SimpleITK.Image
        One per channel. Paths are hard-linked (or copied) unchanged; images are written.
    geometry : Geometry
        Grid of the images, given to the written label map.
    label : ndarray of int or None
        Source label map ``(z, y, x)`` in the source's numbering; None for an unlabelled
        test case.
    label_source : str
        Name of the label's origin, for error messages.
    scales : ndarray of uint8 or None
        Known scales of the structure's voxels (e.g. a synthetic ground truth); skips
        the decomposition.
    thresholds_mm : list of float or None
        Thresholds behind ``scales``.
    info : dict
        Extra entries for this case in the report.
    """

    images: list
    geometry: Geometry
    label: np.ndarray | None = None
    label_source: str = ""
    scales: np.ndarray | None = None
    thresholds_mm: list | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CaseJob:
    """A case to convert: its identifier, split (``'Tr'`` or ``'Ts'``) and a picklable reader."""

    case_id: str
    split: str
    reader: Any


def _decompose(mask: np.ndarray, spacing: Sequence[float], settings: DecompositionSettings,
               thresholds_mm: Sequence[float] | None) -> Any:
    # Imported here so that `nnunet_aux -h` stays fast.
    from ..scales import decompose_vessels

    return decompose_vessels(
        mask, spacing=tuple(spacing), n_scales=settings.n_scales, m_neighbours=settings.m_neighbours,
        thresholds=None if thresholds_mm is None else tuple(thresholds_mm),
        quantiles=settings.quantiles,
    )


def _voxel_counts(labels: np.ndarray, n_scales: int) -> dict[str, int]:
    counts = np.bincount(labels.ravel(), minlength=n_scales + 1)
    return {name: int(counts[i + 1]) for i, name in enumerate(scale_names(n_scales))}


def _float_list(values: Any) -> list[float] | None:
    return None if values is None else [float(v) for v in np.asarray(values, dtype=float).ravel()]


def _file(out: Path, folder: str, case_id: str, file_ending: str, channel: int | None = None) -> Path:
    suffix = "" if channel is None else f"_{channel:04d}"
    return out / folder / f"{case_id}{suffix}{file_ending}"


def _process_case(job: CaseJob, out: Path, plan: LabelPlan, settings: DecompositionSettings,
                  file_ending: str) -> dict:
    """Pass 1: write the images and, unless dataset-wide thresholds are pending, the label."""
    case = job.reader.load()
    for channel, image in enumerate(case.images):
        target = _file(out, f"images{job.split}", job.case_id, file_ending, channel)
        if isinstance(image, sitk.Image):
            write_image(image, target)
        else:  # the reader checked the file (read_geometry)
            link_or_copy(image, target, check=False)
    row: dict[str, Any] = {"shape": list(case.geometry.shape),
                           "spacing_mm": list(case.geometry.spacing_zyx), **case.info}
    if case.label is None:
        if job.split == "Tr":
            raise InputError(f"training case {job.case_id} has no label")
        row["labelled"] = False
        return row
    label = case.label
    if tuple(label.shape) != case.geometry.shape:
        raise InputError(f"{case.label_source}: label shape {label.shape} does not match its image "
                         f"{case.geometry.shape}")
    plan.check_values(label, case.label_source or job.case_id)
    mask = label == plan.structure_value
    if case.scales is not None:
        scales, thresholds, n_branches = case.scales, case.thresholds_mm, case.info.get("n_branches")
    else:
        fixed = settings.fixed_radii_mm if settings.thresholds == "fixed" else None
        result = _decompose(mask, case.geometry.spacing_zyx, settings, fixed)
        if settings.thresholds == "dataset":
            _keep_for_pass_two(out / ".work" / f"{job.split}_{job.case_id}.pkl", result, label, case.geometry)
            row.update(_work=str(out / ".work" / f"{job.split}_{job.case_id}.pkl"),
                       _radii=result.branch_radii_mm.tolist(), n_branches=result.n_branches)
            return row
        scales, thresholds, n_branches = result.labels, result.thresholds_mm, len(result.branches)
    return _finish_labels(row, job, out, plan, label, scales, thresholds, n_branches, case.geometry, file_ending)


def _keep_for_pass_two(path: Path, result: Any, label: np.ndarray, geometry: Geometry) -> None:
    """Store what relabelling needs (branches, vessel voxels' branch ids, the label), compactly.

    Whole-volume arrays would cost up to 12 bytes a voxel per case on disk; vessel voxels
    are few, so their flat indices and branch ids are stored instead.
    """
    branch_ids = result.branch_ids.reshape(-1)
    vessel = np.flatnonzero(branch_ids)
    empty = np.zeros(0, dtype=np.uint8)
    kept = {
        "result": dataclasses.replace(result, labels=empty, radius_mm=empty, branch_ids=empty),
        "vessel": vessel, "vessel_branch": branch_ids[vessel],
        "label": label.astype(np.min_scalar_type(int(label.max()) if label.size else 0)),
        "geometry": geometry,
    }
    with open(path, "wb") as f:
        pickle.dump(kept, f, protocol=pickle.HIGHEST_PROTOCOL)


def _finish_labels(row: dict, job: CaseJob, out: Path, plan: LabelPlan, label: np.ndarray,
                   scales: np.ndarray, thresholds: Any, n_branches: Any, geometry: Geometry,
                   file_ending: str) -> dict:
    labels = plan.relabel(label, np.asarray(scales))
    write_array(labels, geometry, _file(out, f"labels{job.split}", job.case_id, file_ending))
    row.update(thresholds_mm=_float_list(thresholds),
               n_branches=None if n_branches is None else int(n_branches),
               n_voxels_per_scale=_voxel_counts(labels, plan.n_scales))
    return row


def _assign_case(item: tuple[CaseJob, dict], out: Path, plan: LabelPlan, thresholds: np.ndarray,
                 file_ending: str) -> dict:
    """Pass 2 of dataset-wide thresholds: relabel the kept decomposition."""
    from ..scales import assign_scales

    job, row = item
    work = Path(row.pop("_work"))
    row.pop("_radii", None)
    with open(work, "rb") as f:
        kept = pickle.load(f)
    work.unlink()
    label = kept["label"]
    branch_ids = np.zeros(label.size, dtype=kept["vessel_branch"].dtype)
    branch_ids[kept["vessel"]] = kept["vessel_branch"]
    result = dataclasses.replace(kept["result"], branch_ids=branch_ids.reshape(label.shape))
    scales = assign_scales(result, thresholds).labels
    return _finish_labels(row, job, out, plan, label, scales, thresholds, row.get("n_branches"),
                          kept["geometry"], file_ending)


def write_scale_dataset(
    jobs: Iterable[CaseJob],
    plan: LabelPlan,
    name: str,
    *,
    settings: DecompositionSettings = DecompositionSettings(),
    raw_root_folder: str | os.PathLike | None = None,
    overwrite: bool = False,
    num_processes: int = 1,
    progress: bool = True,
    channel_names: Mapping[str, str] | None = None,
    file_ending: str = ".nii.gz",
    description: str | None = None,
    report: Mapping[str, Any] | None = None,
    sources: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write a scale-decomposed dataset ``name`` into the raw data folder.

    Parameters
    ----------
    jobs : iterable of CaseJob
        The cases; ``'Tr'`` cases need labels, ``'Ts'`` cases may have them.
    plan : LabelPlan
        Label renumbering (see :func:`nnunet_aux.conversion.labels.plan_labels`).
    name : str
        Full dataset name ``DatasetXXX_Name``.
    settings : DecompositionSettings, optional
        Scale decomposition settings.
    raw_root_folder : path-like, optional
        Raw data folder; defaults to ``$nnUNet_raw``.
    overwrite : bool, optional
        Replace existing datasets with the same ID (any name).
    num_processes : int, optional
        Worker processes.
    progress : bool, optional
        Show progress bars.
    channel_names : mapping, optional
        nnU-Net channel names (default ``{"0": "CT"}``).
    file_ending : str, optional
        File ending of everything written.
    description : str, optional
        Stored in dataset.json.
    report : mapping, optional
        Extra top-level entries of the report.
    sources : sequence of path-like, optional
        Folders the cases are read from; a dataset to be replaced that is (or holds) one of
        them stops the conversion instead of being deleted.

    Returns
    -------
    folder : Path
        The dataset folder.
    """
    jobs = list(jobs)
    n_train = _check_jobs(jobs, plan, settings)
    root = raw_root(raw_root_folder)
    # One conversion per dataset ID at a time: two started together to one ID would each
    # find the ID free and leave two DatasetXXX_* folders.
    with dataset_id_lock(root, split_dataset_name(name)[0]):
        existing = check_target_free(root, name, overwrite, sources=sources)
        _write_staged(jobs, plan, name, root, existing, n_train, settings, num_processes, progress, channel_names,
                      file_ending, description, report)
    return root / name


def _write_staged(jobs: list[CaseJob], plan: LabelPlan, name: str, root: Path, existing: list[Path], n_train: int,
                  settings: DecompositionSettings, num_processes: int, progress: bool,
                  channel_names: Mapping[str, str] | None, file_ending: str, description: str | None,
                  report: Mapping[str, Any] | None) -> None:
    """The conversion proper, once the target ID is locked and free."""
    # A hidden sibling on the same file system, so that the final rename is atomic and
    # nnU-Net (which looks for "DatasetXXX_*") never sees a half-written dataset.
    with staged_folder(root, name, existing) as out:
        for folder in ("imagesTr", "labelsTr", ".work"):
            (out / folder).mkdir()
        if any(job.split == "Ts" for job in jobs):
            (out / "imagesTs").mkdir()
            (out / "labelsTs").mkdir()
        rows = run_parallel(
            functools.partial(_process_case, out=out, plan=plan, settings=settings, file_ending=file_ending),
            jobs, num_processes, desc=f"{name}: cases", progress=progress,
        )
        dataset_thresholds = None
        if settings.thresholds == "dataset":
            dataset_thresholds = _assign_dataset_scales(jobs, rows, out, plan, settings, name, file_ending,
                                                        num_processes, progress)
        _warn_if_structure_missing(jobs, rows, plan, name)
        shutil.rmtree(out / ".work")
        labels_ts = out / "labelsTs"
        if labels_ts.is_dir() and not any(labels_ts.iterdir()):
            labels_ts.rmdir()

        dataset_json = plan.dataset_json(
            n_train, channel_names=channel_names, file_ending=file_ending, name=split_dataset_name(name)[1],
            description=description,
        )
        write_dataset_json(dataset_json, out)
        write_json_atomic({
            "dataset": name,
            **(dict(report) if report else {}),
            "settings": asdict(settings),
            "structure": plan.structure,
            "scale_names": list(scale_names(settings.n_scales)),
            "label_mapping": plan.mapping(),
            "dataset_thresholds_mm": _float_list(dataset_thresholds),
            "training_cases": {job.case_id: row for job, row in zip(jobs, rows) if job.split == "Tr"},
            "test_cases": {job.case_id: row for job, row in zip(jobs, rows) if job.split == "Ts"},
        }, out / REPORT_FILENAME)


def _warn_if_structure_missing(jobs: list[CaseJob], rows: list[dict], plan: LabelPlan, name: str) -> None:
    """Warn (:class:`~nnunet_aux.errors.InputWarning`) when no training case has a voxel of the
    structure: every scale label is empty, surely not what was meant (a wrong ``--vessel-label``?)."""
    total = sum(sum(row.get("n_voxels_per_scale", {}).values()) for job, row in zip(jobs, rows) if job.split == "Tr")
    if total == 0:
        warn(f"{name}: no training case has a {plan.structure!r} voxel (value {plan.structure_value} in the source "
             f"labels), so every scale label is empty; is {plan.structure!r} the label to decompose?")


def _check_jobs(jobs: list[CaseJob], plan: LabelPlan, settings: DecompositionSettings) -> int:
    """Check the cases before anything is written; returns the number of training cases."""
    if plan.n_scales != settings.n_scales:
        raise ValueError(f"label plan has {plan.n_scales} scales, settings {settings.n_scales}")
    seen: set[tuple[str, str]] = set()
    for job in jobs:
        if job.split not in ("Tr", "Ts"):
            raise ValueError(f"split must be 'Tr' or 'Ts', got {job.split!r}")
        if (job.split, job.case_id) in seen:
            raise InputError(f"case {job.case_id!r} appears twice in images{job.split}")
        seen.add((job.split, job.case_id))
    n_train = sum(job.split == "Tr" for job in jobs)
    if n_train == 0:
        raise InputError("no training cases found")
    return n_train


def _assign_dataset_scales(jobs: list[CaseJob], rows: list[dict], out: Path, plan: LabelPlan,
                           settings: DecompositionSettings, name: str, file_ending: str, num_processes: int,
                           progress: bool) -> np.ndarray:
    """Second pass of ``thresholds='dataset'``: thresholds from the radii of all training cases,
    then every case's scales; ``rows`` are updated in place. Returns the thresholds."""
    from ..scales import quantile_thresholds

    radii = [r for job, row in zip(jobs, rows) if job.split == "Tr" for r in row.get("_radii", [])]
    thresholds = quantile_thresholds(radii, settings.n_scales, settings.quantiles)
    pending = [i for i, row in enumerate(rows) if "_work" in row]
    finished = run_parallel(
        functools.partial(_assign_case, out=out, plan=plan, thresholds=thresholds, file_ending=file_ending),
        [(jobs[i], rows[i]) for i in pending], num_processes, desc=f"{name}: scales", progress=progress,
    )
    for i, row in zip(pending, finished):
        rows[i] = row
    return thresholds
