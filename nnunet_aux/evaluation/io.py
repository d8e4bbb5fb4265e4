"""Finding and matching the segmentation files of two folders, and comparing their grids.

Files are read with :mod:`nnunet_aux.io.segmentations` (every format nnU-Net writes).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..io.images import Geometry
from ..io.segmentations import SEGMENTATION_ENDINGS, segmentation_geometry

#: Tolerances of :func:`check_same_geometry`. nnU-Net copies the geometry of the input
#: image into its predictions, possibly through float32; these absorb that round-off.
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


def case_name(filename: str, endings: Sequence[str] = SEGMENTATION_ENDINGS) -> str | None:
    """Case identifier of a file name: the name without its ending; None if not an image.

    Examples
    --------
    >>> case_name("liver_003.nii.gz"), case_name("summary.json")
    ('liver_003', None)
    """
    for ending in sorted(endings, key=len, reverse=True):
        if filename.endswith(ending) and len(filename) > len(ending):
            return filename[: -len(ending)]
    return None


def find_cases(folder: str | os.PathLike, endings: Sequence[str] = SEGMENTATION_ENDINGS) -> dict[str, str]:
    """Segmentation files of a folder by case name (not recursive).

    Parameters
    ----------
    folder : path
    endings : sequence of str, optional
        File endings to accept.

    Returns
    -------
    cases : dict of str to str
        Case name to file path, sorted by case name.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError(f"missing folder {folder}")
    cases: dict[str, str] = {}
    for filename in sorted(os.listdir(folder)):
        name = case_name(filename, endings)
        path = os.path.join(folder, filename)
        if name is None or not os.path.isfile(path):
            continue
        if name in cases:
            raise InputError(f"two files for case {name!r} in {folder}: {os.path.basename(cases[name])}, {filename}")
        cases[name] = path
    return dict(sorted(cases.items()))


def match_cases(ref_cases: dict[str, str], pred_cases: dict[str, str], ref_dir: str, pred_dir: str) -> list[str]:
    """Case names present in the reference, after checking each has a prediction.

    Predictions without a reference are ignored (nnU-Net prediction folders may hold
    more cases than a test set).

    Raises
    ------
    InputError
        Listing the reference cases without a prediction.
    """
    if not ref_cases:
        raise InputError(f"no segmentation files ({', '.join(SEGMENTATION_ENDINGS)}) in {ref_dir}")
    missing = [name for name in ref_cases if name not in pred_cases]
    if missing:
        shown = ", ".join(missing[:20]) + (f" ... ({len(missing)} in all)" if len(missing) > 20 else "")
        raise InputError(f"{len(missing)} reference case(s) of {ref_dir} have no prediction in {pred_dir}: {shown}")
    return list(ref_cases)


def geometry_mismatch(ref: Geometry, pred: Geometry) -> str | None:
    """What differs between two grids beyond the tolerances, or None if they match."""
    if ref.size != pred.size:
        return f"shape {ref.size} vs {pred.size}"
    if not np.allclose(ref.spacing, pred.spacing, rtol=SPACING_RTOL, atol=0):
        return f"spacing {ref.spacing} vs {pred.spacing}"
    if not np.allclose(ref.origin, pred.origin, rtol=0, atol=ORIGIN_ATOL_MM):
        return f"origin {ref.origin} vs {pred.origin}"
    if not np.allclose(ref.direction, pred.direction, rtol=0, atol=DIRECTION_ATOL):
        return f"direction {ref.direction} vs {pred.direction}"
    return None


def check_same_geometry(pairs: Sequence[tuple[str, str]]) -> None:
    """Check that each (reference, prediction) pair of files shares its image grid.

    Only headers are read. Size, spacing, origin and direction are compared with the
    module tolerances ``SPACING_RTOL``, ``ORIGIN_ATOL_MM`` and ``DIRECTION_ATOL``.

    Raises
    ------
    InputError
        Naming both files and what differs (the first mismatching pair, and how many more).
    """
    problems = []
    for ref_path, pred_path in pairs:
        difference = geometry_mismatch(segmentation_geometry(ref_path), segmentation_geometry(pred_path))
        if difference is not None:
            problems.append(f"{ref_path} and {pred_path}: {difference}")
    if problems:
        more = f" (and {len(problems) - 1} more pair(s))" if len(problems) > 1 else ""
        raise InputError(f"reference and prediction geometry differ: {problems[0]}{more}")
