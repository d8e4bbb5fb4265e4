"""Decompose the vessel label of any nnU-Net raw dataset into scales."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..dataset_format import check_dataset_json, load_dataset_json
from ..errors import InputError
from ..io.images import SITK_FILE_ENDINGS, check_same_grid, read_geometry, read_label_map
from .labels import plan_labels
from .paths import check_ending_matches, check_not_source_id, resolve_source, source_short_name, target_name
from .paths import raw_root as _raw_root
from .writer import CaseJob, DecompositionSettings, LoadedCase, write_scale_dataset


@dataclass(frozen=True)
class RawCaseReader:
    """Reads one case of a raw dataset: image files (one per channel) and an optional label file."""

    image_files: tuple[str, ...]
    label_file: str | None = None

    def load(self) -> LoadedCase:
        """Check the files and load the label map; images are passed on as paths."""
        geometries = [read_geometry(f) for f in self.image_files]
        for f, g in zip(self.image_files[1:], geometries[1:]):
            check_same_grid(geometries[0], g, self.image_files[0], f)
        label = None
        if self.label_file is not None:
            label, label_geometry = read_label_map(self.label_file)
            check_same_grid(geometries[0], label_geometry, self.image_files[0], self.label_file)
        return LoadedCase(images=[Path(f) for f in self.image_files], geometry=geometries[0], label=label,
                          label_source=str(self.label_file))


def _is_hidden(name: str) -> bool:
    # "._name" files are macOS resource forks (e.g. in the MSD archives), not images.
    return name.startswith(".")


def raw_dataset_jobs(folder: Path, dataset_json: dict) -> list[CaseJob]:
    """Cases of an nnU-Net raw dataset folder (imagesTr/labelsTr, imagesTs and, if present, labelsTs).

    Every expected file is checked to exist; ``numTraining`` must match what is found.
    """
    source = folder / "dataset.json"
    check_dataset_json(dataset_json, str(source), required=("labels", "file_ending"))
    ending = dataset_json["file_ending"]
    if ending not in SITK_FILE_ENDINGS:
        raise InputError(f"{source}: file_ending {ending!r} is not one this conversion reads "
                         f"({', '.join(SITK_FILE_ENDINGS)})")
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not channels:
        raise InputError(f"{source} has no 'channel_names' entry")
    n_channels = len(channels)
    jobs: list[CaseJob] = []
    if "dataset" in dataset_json:
        for case_id, entry in dataset_json["dataset"].items():
            images = tuple(str(folder / os.path.expandvars(f)) for f in entry["images"])
            label = str(folder / os.path.expandvars(entry["label"]))
            if len(images) != n_channels:
                raise InputError(f"{source}: case {case_id} lists {len(images)} images for {n_channels} channels")
            jobs.append(CaseJob(case_id, "Tr", RawCaseReader(images, label)))
    else:
        jobs += _folder_jobs(folder, "Tr", ending, n_channels, labels_required=True)
    if (folder / "imagesTs").is_dir():
        jobs += _folder_jobs(folder, "Ts", ending, n_channels, labels_required=False)
    n_train = sum(j.split == "Tr" for j in jobs)
    if "numTraining" in dataset_json and dataset_json["numTraining"] != n_train:
        raise InputError(f"{source} says numTraining = {dataset_json['numTraining']}, but {n_train} training "
                         f"cases were found in {folder / 'imagesTr'}")
    return jobs


def _folder_jobs(folder: Path, split: str, ending: str, n_channels: int, labels_required: bool) -> list[CaseJob]:
    images_dir, labels_dir = folder / f"images{split}", folder / f"labels{split}"
    if not images_dir.is_dir():
        raise InputError(f"missing folder {images_dir}")
    check_ending_matches(images_dir, ending, folder / "dataset.json")
    case_ids = sorted({
        f.name[: -len(ending) - 5] for f in images_dir.iterdir()
        if f.name.endswith(ending) and not _is_hidden(f.name) and f.name[-len(ending) - 5] == "_"
    })
    jobs = []
    for case_id in case_ids:
        images = tuple(images_dir / f"{case_id}_{c:04d}{ending}" for c in range(n_channels))
        for f in images:
            if not f.is_file():
                raise InputError(f"missing file {f}")
        jobs.append(raw_case_job(case_id, split, images, labels_dir / f"{case_id}{ending}", labels_required))
    return jobs


def raw_case_job(case_id: str, split: str, images: Sequence[Path], label: Path, label_required: bool) -> CaseJob:
    """The job of a case in image and label files, read by :class:`RawCaseReader`.

    Parameters
    ----------
    case_id : str
        Case identifier.
    split : {'Tr', 'Ts'}
        Where the case goes.
    images : sequence of Path
        Image files, channel 0 first.
    label : Path
        The case's label file, which may be missing.
    label_required : bool
        Stop when ``label`` is missing; otherwise the case has no label.

    Returns
    -------
    job : CaseJob
    """
    found = label.is_file()
    if not found and label_required:
        raise InputError(f"missing file {label}")
    return CaseJob(case_id, split, RawCaseReader(tuple(map(str, images)), str(label) if found else None))


def decompose_dataset(
    source: int | str | os.PathLike,
    target: int | str,
    structure: str = "vessel",
    *,
    settings: DecompositionSettings = DecompositionSettings(),
    raw_root: str | os.PathLike | None = None,
    overwrite: bool = False,
    num_processes: int = 1,
    progress: bool = True,
) -> Path:
    """Turn an nnU-Net raw dataset with a vessel label into a scale-decomposed dataset.

    Images are hard-linked (or copied) unchanged; label maps get the structure's scales
    ``1..S`` and the other labels after them (see :mod:`nnunet_aux.dataset_format`).

    Parameters
    ----------
    source : int, str or path-like
        Source dataset: an ID, ``DatasetXXX_Name`` or a folder.
    target : int or str
        Target ID (named after the source with ``_scales`` appended) or ``DatasetXXX_Name``.
    structure : str, optional
        Name of the label to decompose.
    settings : DecompositionSettings, optional
        Number of scales and threshold mode.
    raw_root : path-like, optional
        Raw data folder for IDs and the output; defaults to ``$nnUNet_raw``.
    overwrite : bool, optional
        Replace an existing dataset with the target's ID.
    num_processes : int, optional
        Worker processes.
    progress : bool, optional
        Show progress bars.

    Returns
    -------
    folder : Path
        The new dataset folder.

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Sect. 2.1.

    Examples
    --------
    >>> decompose_dataset(8, 510, "vessel",
    ...                   settings=DecompositionSettings(thresholds="dataset"))  # doctest: +SKIP
    PosixPath('.../Dataset510_HepaticVessel_scales')
    """
    folder = resolve_source(source, raw_root)
    dataset_json = load_dataset_json(folder)
    check_dataset_json(dataset_json, str(folder / "dataset.json"), required=("labels", "file_ending"))
    plan = plan_labels(dataset_json["labels"], structure, settings.n_scales, str(folder / "dataset.json"))
    jobs = raw_dataset_jobs(folder, dataset_json)
    name = target_name(target, f"{source_short_name(folder)}_scales")
    check_not_source_id(name, folder, _raw_root(raw_root))
    return write_scale_dataset(
        jobs, plan, name, settings=settings, raw_root_folder=raw_root, overwrite=overwrite,
        num_processes=num_processes, progress=progress,
        channel_names=dataset_json.get("channel_names", dataset_json.get("modality")),
        file_ending=dataset_json["file_ending"],
        description=f"{plan.structure} of {folder.name} decomposed into {settings.n_scales} scales",
        report={"source": str(folder.resolve())}, sources=[folder],
    )
