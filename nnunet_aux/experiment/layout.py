"""Where nnU-Net keeps a dataset, a trainer's folds and their outputs, and how far a fold got.

The state of every fold is read from the files nnU-Net writes, never from a record of
its own, so an experiment that was killed continues where it stopped:

- ``finished``: ``checkpoint_final.pth`` and ``validation/summary.json``; reused;
- ``needs_validation``: ``checkpoint_final.pth`` only; ``nnUNetv2_train ... --val``;
- ``interrupted``: ``checkpoint_latest.pth`` but no final checkpoint; ``nnUNetv2_train ... --c``;
- ``new``: none of these; ``nnUNetv2_train ...``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..errors import InputError

FINISHED = "finished"
NEEDS_VALIDATION = "needs_validation"
INTERRUPTED = "interrupted"
NEW = "new"

#: nnU-Net's environment variables for its folders.
NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def nnunet_folder(variable: str, env: dict[str, str] | None = None) -> Path:
    """The folder in one of nnU-Net's environment variables, read now (not at import).

    Parameters
    ----------
    variable : str
        ``nnUNet_raw``, ``nnUNet_preprocessed`` or ``nnUNet_results``.
    env : dict, optional
        Environment to read; default ``os.environ``.

    Returns
    -------
    folder : Path

    Raises
    ------
    InputError
        When the variable is not set.
    """
    if variable not in NNUNET_FOLDERS:
        raise InputError(f"variable must be one of {NNUNET_FOLDERS}, got {variable!r}")
    value = (os.environ if env is None else env).get(variable)
    if not value:
        raise InputError(f"${variable} is not set; set nnU-Net's folders as described in nnU-Net's "
                         "documentation/setting_up_paths.md")
    return Path(value)


def find_dataset_name(dataset: int | str, preprocessed: str | os.PathLike, raw: str | os.PathLike | None = None) -> str:
    """The folder name ``DatasetXXX_Name`` of a dataset ID (or name) in ``nnUNet_preprocessed``.

    Parameters
    ----------
    dataset : int or str
        ID (``510``, ``"510"``) or full name (``"Dataset510_Vessels"``).
    preprocessed : path-like
        ``$nnUNet_preprocessed``.
    raw : path-like, optional
        ``$nnUNet_raw``, only to say that the dataset still needs preprocessing.

    Returns
    -------
    name : str

    Raises
    ------
    InputError
        When no (or more than one) preprocessed dataset matches.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     os.mkdir(os.path.join(d, "Dataset007_Tiny"))
    ...     find_dataset_name(7, d)
    'Dataset007_Tiny'
    """
    preprocessed = Path(preprocessed)
    text = str(dataset)
    if text.startswith("Dataset"):
        prefix, exact = text, True
    else:
        try:
            number = int(text)
        except ValueError:
            raise InputError(f"dataset must be an ID (510) or a name (Dataset510_Vessels), got {dataset!r}") from None
        if not 0 < number < 1000:
            raise InputError(f"dataset ID must be between 1 and 999, got {number}")
        prefix, exact = f"Dataset{number:03d}_", False

    def matches(folder: Path) -> list[str]:
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and
                      (p.name == prefix if exact else p.name.startswith(prefix)))

    found = matches(preprocessed)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise InputError(f"several datasets in {preprocessed} match {dataset!r}: {found}")
    hint = ""
    if raw is not None and matches(Path(raw)):
        hint = f"; it is in {raw}: run nnUNetv2_plan_and_preprocess -d {dataset} first"
    raise InputError(f"unknown dataset {text}: no {prefix}{'' if exact else '*'} folder in "
                     f"$nnUNet_preprocessed ({preprocessed}){hint}")


def trainer_folder(results_dataset: str | os.PathLike, trainer: str, plans: str, configuration: str) -> Path:
    """nnU-Net's output folder of a trainer: ``<results>/<dataset>/<trainer>__<plans>__<configuration>``."""
    return Path(results_dataset) / f"{trainer}__{plans}__{configuration}"


def fold_state(fold_dir: str | os.PathLike) -> str:
    """How far nnU-Net got with a fold, from the files in its folder.

    Parameters
    ----------
    fold_dir : path-like
        ``.../<trainer>__<plans>__<configuration>/fold_X`` (it need not exist).

    Returns
    -------
    state : str
        ``"finished"``, ``"needs_validation"``, ``"interrupted"`` or ``"new"`` (see the
        module's table).

    Examples
    --------
    >>> fold_state("/nonexistent/fold_0")
    'new'
    """
    fold_dir = Path(fold_dir)
    if (fold_dir / "checkpoint_final.pth").is_file():
        return FINISHED if (fold_dir / "validation" / "summary.json").is_file() else NEEDS_VALIDATION
    if (fold_dir / "checkpoint_latest.pth").is_file():
        return INTERRUPTED
    return NEW


def validation_cases(preprocessed_dataset: str | os.PathLike, fold: int) -> list[str] | None:
    """The validation cases of a fold in ``splits_final.json``, or None without that fold.

    Parameters
    ----------
    preprocessed_dataset : path-like
        ``$nnUNet_preprocessed/DatasetXXX_Name``.
    fold : int

    Returns
    -------
    cases : list of str or None
    """
    path = Path(preprocessed_dataset) / "splits_final.json"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        splits = json.load(f)
    if not isinstance(splits, list) or not 0 <= fold < len(splits):
        return None
    return list(splits[fold]["val"])


def check_folds(folds: Sequence[int | str]) -> list[int]:
    """Fold numbers as ints; ``all`` is refused (it has no held-out validation cases)."""
    out = []
    for fold in folds:
        try:
            number = int(fold)
        except (TypeError, ValueError):
            raise InputError(f"folds must be non-negative integers (fold 'all' has no validation cases), "
                             f"got {fold!r}") from None
        if number < 0:
            raise InputError(f"folds must be non-negative integers, got {fold!r}")
        if number not in out:
            out.append(number)
    if not out:
        raise InputError("no folds given")
    return out
