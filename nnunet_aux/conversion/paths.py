"""Dataset names, IDs and folders in nnU-Net's raw data folder."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from ..errors import DatasetExistsError, InputError

_NAME = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-.]+)$")


def raw_root(raw_root: str | os.PathLike | None = None) -> Path:
    """The nnU-Net raw data folder: ``raw_root`` if given, else ``$nnUNet_raw``.

    Examples
    --------
    >>> raw_root("/data/raw").as_posix()
    '/data/raw'
    """
    setting = "--raw-root / raw_root"
    if raw_root is None:
        raw_root = os.environ.get("nnUNet_raw")
        setting = "$nnUNet_raw"
        if not raw_root:
            raise InputError(
                "no raw data folder: set the nnUNet_raw environment variable or pass raw_root"
            )
    path = Path(raw_root)
    if path.exists() and not path.is_dir():
        raise InputError(f"the raw data folder {path} ({setting}) is a file, not a folder")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"the raw data folder {path} ({setting}) lies under {parent}, which is a file")
            break
    return path


def dataset_name(dataset_id: int | str, name: str) -> str:
    """``DatasetXXX_Name`` of an ID and a name.

    Examples
    --------
    >>> dataset_name(7, "SyntheticVessels")
    'Dataset007_SyntheticVessels'
    """
    dataset_id = parse_dataset_id(dataset_id)
    full = f"Dataset{dataset_id:03d}_{name}"
    if not _NAME.match(full):
        raise InputError(f"dataset name {name!r} may only hold letters, digits, '_', '-' and '.'")
    return full


def split_dataset_name(full: str) -> tuple[int, str]:
    """ID and short name of a ``DatasetXXX_Name`` folder name.

    Examples
    --------
    >>> split_dataset_name("Dataset007_SyntheticVessels")
    (7, 'SyntheticVessels')
    """
    match = _NAME.match(full)
    if not match:
        raise InputError(f"{full!r} is not an nnU-Net dataset name (DatasetXXX_Name)")
    return int(match.group(1)), match.group(2)


def source_short_name(folder: Path) -> str:
    """The name part of a source dataset folder (``Dataset042_Liver`` -> ``Liver``), else the folder's name."""
    return split_dataset_name(folder.name)[1] if _NAME.match(folder.name) else folder.name


def check_not_source_id(name: str, source: Path, root: Path) -> None:
    """Stop when target ``name`` would take the ID of the source dataset ``source`` in ``root``.

    Links are followed: a link to a raw dataset is that dataset.
    """
    real = source.resolve()
    if (_NAME.match(real.name) and split_dataset_name(real.name)[0] == split_dataset_name(name)[0]
            and real.parent == root.resolve()):
        raise InputError(f"target {name} has the ID of the source dataset {real.name}; pick another ID")


def parse_dataset_id(dataset_id: int | str) -> int:
    """A dataset ID as an int in 1..999, with a clear error otherwise."""
    try:
        value = int(dataset_id)
    except (TypeError, ValueError):
        raise InputError(f"dataset ID must be a number from 1 to 999, got {dataset_id!r}") from None
    if not 1 <= value <= 999:
        raise InputError(f"dataset ID must be a number from 1 to 999, got {dataset_id!r}")
    return value


def target_name(target: int | str, default_name: str) -> str:
    """Full name of a dataset to create, from an ID (then ``default_name`` is used) or a name.

    Examples
    --------
    >>> target_name("510", "HepaticVessel_scales")
    'Dataset510_HepaticVessel_scales'
    >>> target_name("Dataset511_Mine", "unused")
    'Dataset511_Mine'
    """
    text = str(target)
    match = _NAME.match(text)
    if match:
        return dataset_name(match.group(1), match.group(2))
    if text.startswith("Dataset"):
        raise InputError(f"dataset name {text!r} is not of the form DatasetXXX_Name (XXX three digits)")
    return dataset_name(text, default_name)


def folders_with_id(root: Path, dataset_id: int) -> list[Path]:
    """Folders ``DatasetXXX_*`` in ``root`` with this ID (any name)."""
    if not root.is_dir():
        return []
    prefix = f"Dataset{dataset_id:03d}_"
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))


def resolve_source(source: int | str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Folder of an existing raw dataset given as an ID, a ``DatasetXXX_Name`` or a path.

    Parameters
    ----------
    source : int, str or path-like
        ``510``, ``"Dataset510_Name"`` (looked up in the raw folder) or a folder path.
    root : path-like, optional
        Raw data folder; defaults to ``$nnUNet_raw``.

    Returns
    -------
    folder : Path
    """
    text = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
    path = Path(text)
    if path.is_dir() and (path / "dataset.json").is_file():
        return path
    if text.isdigit():
        base = raw_root(root)
        found = folders_with_id(base, parse_dataset_id(text))
        if len(found) != 1:
            what = "no dataset" if not found else f"{len(found)} datasets ({', '.join(p.name for p in found)})"
            raise InputError(f"found {what} with ID {int(text)} in {base}")
        path = found[0]
    elif _NAME.match(text):
        path = raw_root(root) / text
    if not path.is_dir():
        raise InputError(f"source dataset {text!r} not found (looked for folder {path})")
    if not (path / "dataset.json").is_file():
        raise InputError(f"missing file {path / 'dataset.json'}")
    return path


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_target_free(root: Path, name: str, overwrite: bool,
                      sources: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Folders that block writing dataset ``name`` into ``root``.

    Returns the raw folders with the same ID, to be removed when ``overwrite`` is true;
    raises :class:`DatasetExistsError` when they exist and ``overwrite`` is false. A
    dataset with the same ID but another name in ``$nnUNet_preprocessed`` or
    ``$nnUNet_results`` always stops the conversion, since nnU-Net would then refuse the ID.
    A folder to be replaced that is, holds or lies inside one of ``sources`` (compared
    after following symbolic links) stops it too: overwriting would delete the input.
    """
    dataset_id = split_dataset_name(name)[0]
    existing = folders_with_id(root, dataset_id)
    for folder in existing:
        real = folder.resolve()
        for source in sources:
            source_real = Path(source).resolve()
            if _inside(source_real, real) or _inside(real, source_real):
                raise InputError(
                    f"target {name} would replace {folder}, which is the source {source}"
                    + (f" (a link to {source_real})" if Path(source).absolute() != source_real else "")
                    + "; pick another ID"
                )
    if existing and not overwrite:
        raise DatasetExistsError(
            f"dataset ID {dataset_id} already exists: {', '.join(str(p) for p in existing)} "
            f"(use --overwrite / overwrite=True to replace it)"
        )
    for variable in ("nnUNet_preprocessed", "nnUNet_results"):
        other_root = os.environ.get(variable)
        if not other_root:
            continue
        clashes = [p for p in folders_with_id(Path(other_root), dataset_id) if p.name != name]
        if clashes:
            raise DatasetExistsError(
                f"{variable} holds {clashes[0]} with the same ID {dataset_id} but another name; "
                f"nnU-Net would refuse the ID. Remove it or pick another ID"
            )
    return existing


def check_ending_matches(folder: Path, ending: str, source: str | os.PathLike) -> None:
    """Stop when ``file_ending`` of dataset.json ``source`` matches no file of ``folder`` but others are there.

    A wrong ``file_ending`` otherwise shows up as "0 training cases found", which names
    neither the field nor the fix.
    """
    if not folder.is_dir():
        return
    names = [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if names and not any(n.endswith(ending) for n in names):
        endings = sorted({"." + n.split(".", 1)[1] if "." in n else "(none)" for n in names})
        raise InputError(f"{source}: file_ending {ending!r} matches no file in {folder} (its files end in "
                         f"{', '.join(endings[:5])}); set file_ending to the ending of the images")
