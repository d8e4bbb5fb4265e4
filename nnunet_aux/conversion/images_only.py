"""An nnU-Net raw dataset of unlabelled images, for self-supervised pretraining (CLEF).

nnU-Net needs a label map for every training case: its fingerprint extraction collects
intensity statistics from the foreground voxels (and fails when no case has any), its
preprocessing records foreground locations for oversampling, and its data loader reads a
segmentation with every patch. An images-only dataset therefore gets one dummy label per
case, on the image's grid:

* by default label 1 on the whole image: the fingerprint's intensity statistics are those
  of the whole image and foreground oversampling draws patch centres anywhere;
* with ``foreground_threshold``, label 1 where the first channel exceeds it (CLEF's body
  mask is ``> -500`` HU), so that statistics and oversampled patches come from the body.

The labels mean nothing to ``nnUNetTrainerCLEFPretrain``, which never reads them. Images
are hard-linked (or copied) unchanged; the dataset passes nnU-Net's
``--verify_dataset_integrity``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from ..dataset_format import load_dataset_json, write_dataset_json, write_json_atomic
from ..errors import InputError, warn
from ..io.files import dataset_id_lock
from ..io.images import SITK_FILE_ENDINGS, check_complete, link_or_copy, read_image, write_image
from ..parallel import run_parallel
from .paths import (
    _NAME,
    check_ending_matches,
    check_not_source_id,
    check_target_free,
    resolve_source,
    source_short_name,
    split_dataset_name,
    target_name,
)
from .paths import raw_root as _raw_root
from .staging import staged_folder

#: the file beside dataset.json that says where every case came from
IMAGES_ONLY_REPORT_FILENAME = "images_only_report.json"
LABELS = {"background": 0, "image": 1}


@dataclass(frozen=True)
class ImageCase:
    """One case: its identifier and its image files, channel 0 first."""

    identifier: str
    files: tuple[str, ...]
    source: str


def _ending(name: str) -> str | None:
    return next((e for e in SITK_FILE_ENDINGS if name.endswith(e)), None)


def _group_folder(folder: Path, ending: str | None) -> tuple[list[ImageCase], str | None]:
    """Cases of a folder of images: nnU-Net naming (``ID_XXXX<ending>``) or one single-channel case per file."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and _ending(p.name))
    if ending is not None:
        files = [p for p in files if p.name.endswith(ending)]
    endings = {_ending(p.name) for p in files}
    if len(endings) > 1:
        raise InputError(f"{folder} holds images with different file endings ({', '.join(sorted(endings))}); "
                         f"nnU-Net needs one")
    if not files:
        return [], ending
    ending = endings.pop()
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending) + "$")
    matches = [pattern.match(p.name) for p in files]
    if all(matches):
        by_case: dict[str, dict[int, str]] = {}
        for p, m in zip(files, matches):
            by_case.setdefault(m["case"], {})[int(m["channel"])] = str(p)
        cases = []
        for case, channels in by_case.items():
            if sorted(channels) != list(range(len(channels))):
                raise InputError(f"case {case} in {folder} has channels {sorted(channels)}; expected 0 ... "
                                 f"{len(channels) - 1} (files {case}_0000{ending}, ...)")
            cases.append(ImageCase(case, tuple(channels[c] for c in range(len(channels))), str(folder)))
        return cases, ending
    return [ImageCase(p.name[:-len(ending)], (str(p),), str(folder)) for p in files], ending


def _dataset_cases(folder: Path, include_test: bool) -> tuple[list[ImageCase], dict, str]:
    """Cases (imagesTr, and imagesTs if asked) of an nnU-Net raw dataset, its channel names and file ending."""
    dataset_json = load_dataset_json(folder)
    source = folder / "dataset.json"
    ending = dataset_json.get("file_ending")
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not ending or not channels:
        raise InputError(f"{source} lacks 'file_ending' or 'channel_names'")
    if ending not in SITK_FILE_ENDINGS:
        raise InputError(f"{source}: file_ending {ending!r} is not supported here (supported: "
                         f"{', '.join(SITK_FILE_ENDINGS)})")
    if "dataset" in dataset_json:  # explicit file lists (nnU-Net's alternative to imagesTr)
        from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

        listed = get_filenames_of_train_images_and_targets(str(folder), dataset_json)
        cases = [ImageCase(k, tuple(v["images"]), str(folder)) for k, v in listed.items()]
    elif (folder / "imagesTr").is_dir():
        cases, _ = _group_folder(folder / "imagesTr", ending)
        if not cases:
            check_ending_matches(folder / "imagesTr", ending, source)
    else:
        raise InputError(f"missing folder {folder / 'imagesTr'}")
    if include_test and (folder / "imagesTs").is_dir():
        cases += _group_folder(folder / "imagesTs", ending)[0]
    for case in cases:
        if len(case.files) != len(channels):
            raise InputError(f"case {case.identifier} of {folder} has {len(case.files)} image files, "
                             f"dataset.json names {len(channels)} channels")
    return cases, {str(k): v for k, v in channels.items()}, ending


def _resolve(source, raw_root) -> tuple[Path, bool]:
    """(folder, is_dataset) of a source given as a dataset ID, DatasetXXX_Name, dataset folder or image folder."""
    text = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
    path = Path(text)
    if path.is_dir():
        return path, (path / "dataset.json").is_file()
    if text.isdigit() or _NAME.match(text):
        return resolve_source(text, raw_root), True
    raise InputError(f"source {text!r} is neither a folder nor an nnU-Net dataset ID or name")


def _write_label(job: tuple[ImageCase, str, float | None]) -> int:
    """Write the dummy label of a case (every channel read and checked: no NaN, one value per voxel);
    returns its number of label voxels."""
    case, label_file, threshold = job
    image = read_image(case.files[0])
    for other in case.files[1:]:
        read_image(other)
    if threshold is None:
        array = np.ones(sitk.GetArrayViewFromImage(image).shape, dtype=np.uint8)
    else:
        array = (sitk.GetArrayViewFromImage(image) > threshold).astype(np.uint8)
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(image)
    write_image(label, label_file)
    return int(np.count_nonzero(array))


def make_images_only_dataset(
    sources: Sequence[int | str | os.PathLike],
    target: int | str,
    *,
    channel_names: Mapping[str, str] | Sequence[str] | None = None,
    include_test: bool = False,
    foreground_threshold: float | None = None,
    raw_root: str | os.PathLike | None = None,
    overwrite: bool = False,
    num_processes: int = 1,
    progress: bool = True,
) -> Path:
    """Write an nnU-Net raw dataset of the given images with dummy label maps.

    Parameters
    ----------
    sources : sequence
        Each an nnU-Net raw dataset (ID, ``DatasetXXX_Name`` or folder with dataset.json:
        its imagesTr, and imagesTs with ``include_test``) or a folder of images (nnU-Net
        naming ``ID_0000.nii.gz``, or one single-channel case per file). Case identifiers
        must be unique over all sources.
    target : int or str
        Target ID (named ``<source name>_images``, or ``ImagesOnly``) or ``DatasetXXX_Name``.
    channel_names : mapping or sequence of str, optional
        nnU-Net's channel names (``CT`` selects CT normalisation); needed when no source is
        an nnU-Net dataset, and overrides the datasets' names when given.
    include_test : bool, optional
        Also take the imagesTs of dataset sources.
    foreground_threshold : float, optional
        Label 1 where channel 0 exceeds this value (e.g. -500 for CT: the body); whole
        image when omitted.
    raw_root : path-like, optional
        Raw data folder; defaults to ``$nnUNet_raw``.
    overwrite : bool, optional
        Replace an existing dataset with the target's ID.
    num_processes : int, optional
        Worker processes writing label maps.
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    folder : Path
        The new dataset, with ``images_only_report.json`` (case -> source files) beside
        dataset.json.

    Examples
    --------
    >>> import tempfile
    >>> from nnunet_aux.conversion import write_synthetic_dataset
    >>> with tempfile.TemporaryDirectory() as raw:
    ...     _ = write_synthetic_dataset(998, 2, shape=(16, 24, 24), raw_root=raw, true_scales=True,
    ...                                 progress=False)
    ...     folder = make_images_only_dataset([998], 997, raw_root=raw, progress=False)
    ...     folder.name, sorted(p.name for p in (folder / "labelsTr").iterdir())
    ('Dataset997_SyntheticVessels_images', ['synthetic_000.nii.gz', 'synthetic_001.nii.gz'])
    """
    if not sources:
        raise InputError("no source given")
    if foreground_threshold is not None and not np.isfinite(foreground_threshold):
        raise InputError(f"foreground threshold must be a finite number, got {foreground_threshold}")
    resolved = [_resolve(s, raw_root) for s in sources]
    cases, names, ending = _collect_cases(resolved, include_test, channel_names)
    first, first_is_dataset = resolved[0]
    default = source_short_name(first) + "_images" if first_is_dataset and _NAME.match(first.name) else "ImagesOnly"
    name = target_name(target, default)
    root = _raw_root(raw_root)
    for folder, is_dataset in resolved:
        if is_dataset:
            check_not_source_id(name, folder, root)
    with dataset_id_lock(root, split_dataset_name(name)[0]):
        existing = check_target_free(root, name, overwrite, sources=[f for f, _ in resolved])
        for case in cases:  # a truncated image would be linked in unnoticed otherwise
            for f in case.files:
                check_complete(f)
        with staged_folder(root, name, existing) as out:
            _write_dataset(out, name, cases, names, ending, foreground_threshold, num_processes, progress)
            write_json_atomic({
                "label": _label_rule(foreground_threshold), "sources": [str(f) for f, _ in resolved],
                "include_test": bool(include_test), "cases": {c.identifier: list(c.files) for c in cases},
            }, out / IMAGES_ONLY_REPORT_FILENAME)
    return root / name


def _collect_cases(resolved, include_test: bool, channel_names) -> tuple[list[ImageCase], dict, str]:
    """The cases of every source, their channel names and their one file ending, checked."""
    cases: list[ImageCase] = []
    names: dict | None = None
    endings: set = set()
    for folder, is_dataset in resolved:
        if is_dataset:
            found, channels, ending = _dataset_cases(folder, include_test)
            if names is not None and channels != names and channel_names is None:
                raise InputError(f"{folder} names its channels {channels}, another source {names}; "
                                 f"give the channel names")
            names = channels
        else:
            found, ending = _group_folder(folder, None)
        if not found:
            raise InputError(f"no images found in {folder}")
        endings.add(ending)
        cases += found
    if len(endings) > 1:
        raise InputError(f"the sources use different file endings ({', '.join(sorted(endings))}); nnU-Net needs one")
    if channel_names is not None:
        names = (dict(channel_names) if isinstance(channel_names, Mapping)
                 else {str(i): str(n) for i, n in enumerate(channel_names)})
    if names is None:
        raise InputError("no channel names: give them (e.g. CT, or MR), nnU-Net picks its normalisation from them")
    _check_cases(cases, names)
    return cases, names, endings.pop()


def _check_cases(cases: Sequence[ImageCase], names: Mapping) -> None:
    seen: dict[str, str] = {}
    for case in cases:
        if case.identifier in seen:
            raise InputError(f"case {case.identifier} is in {seen[case.identifier]} and in {case.source}; "
                             f"case identifiers must be unique")
        seen[case.identifier] = case.source
        if len(case.files) != len(names):
            raise InputError(f"case {case.identifier} ({case.source}) has {len(case.files)} channels, "
                             f"the channel names {len(names)}")


def _label_rule(foreground_threshold: float | None) -> str:
    return "1 on the whole image" if foreground_threshold is None else f"1 where channel 0 > {foreground_threshold}"


def _write_dataset(out: Path, name: str, cases: Sequence[ImageCase], names: Mapping, ending: str,
                   foreground_threshold: float | None, num_processes: int, progress: bool) -> None:
    """Images (linked), dummy label maps and dataset.json into the staging folder ``out``."""
    (out / "imagesTr").mkdir()
    (out / "labelsTr").mkdir()
    jobs = []
    for case in cases:
        for c, f in enumerate(case.files):
            link_or_copy(f, out / "imagesTr" / f"{case.identifier}_{c:04d}{ending}", check=False)
        jobs.append((case, str(out / "labelsTr" / f"{case.identifier}{ending}"), foreground_threshold))
    counts = run_parallel(_write_label, jobs, num_processes, desc="label maps", progress=progress)
    if foreground_threshold is not None:
        empty = [case.identifier for case, n in zip(cases, counts) if n == 0]
        if empty:
            shown = ", ".join(empty[:5]) + (f" ... ({len(empty)} in all)" if len(empty) > 5 else "")
            warn(f"--threshold / foreground_threshold {foreground_threshold:g} lies above every voxel of channel 0 "
                 f"in {len(empty)} of {len(cases)} case(s) ({shown}): their dummy labels are empty"
                 + ("; nnU-Net's fingerprint needs foreground voxels: pick a lower threshold"
                    if len(empty) == len(cases) else ""))
    write_dataset_json({
        "channel_names": dict(names), "labels": dict(LABELS), "numTraining": len(cases), "file_ending": ending,
        "name": split_dataset_name(name)[1],
        "description": f"images only, for self-supervised pretraining (nnUNetTrainerCLEFPretrain); "
                       f"dummy label {_label_rule(foreground_threshold)}",
    }, out)
