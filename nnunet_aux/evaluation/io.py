"""Finding, matching and reading segmentation files for folder evaluation.

Every format nnU-Net writes segmentations in is read. Medical formats (``.nii.gz``,
``.nii``, ``.nrrd``, ``.mha``, ``.mhd``, ``.gipl``) are read with SimpleITK, whose header
gives the whole grid (size, spacing, origin, direction) that the geometry check compares;
the others (``.png``, ``.bmp``, ``.tif``, ``.tiff``: 2D natural images and 3D TIFF) with
nnU-Net's own reader classes (:mod:`nnunetv2.imageio`), so they come out exactly as nnU-Net
reads them; they carry a size and a spacing but no origin or direction. Arrays come in
array axis order (``z, y, x`` for a volume) with spacings to match.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..conversion.image_io import Geometry, check_complete, quiet_itk
from ..conversion.image_io import read_geometry as _read_geometry
from ..errors import InputError

#: Formats read with SimpleITK (full header).
SITK_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".gipl")
#: Formats read with nnU-Net's reader classes (``NaturalImage2DIO``, ``Tiff3DIO``).
NNUNET_READER_ENDINGS = (".png", ".bmp", ".tif", ".tiff")
#: File endings recognised as segmentations.
SEGMENTATION_ENDINGS = SITK_ENDINGS + NNUNET_READER_ENDINGS
#: nnU-Net's spacing of the dummy first axis of 2D images.
_NNUNET_2D_SPACING = 999

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


def _sitk_error(path: str | os.PathLike, error: RuntimeError) -> InputError:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return InputError(f"cannot read {os.fspath(path)}: {lines[-1] if lines else 'unreadable'}")


def _read_with_nnunet(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...]]:
    """Segmentation and spacing (array order) read by the nnU-Net reader class of the file's ending."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending

    path = os.fspath(path)
    check_complete(path)
    ending = next(e for e in NNUNET_READER_ENDINGS if path.lower().endswith(e))
    try:
        io_class = determine_reader_writer_from_file_ending(ending, example_file=path, verbose=False)
        seg, properties = io_class().read_seg(path)
    except Exception as e:  # noqa: BLE001 (nnU-Net's readers raise anything, a missing spacing file included)
        raise InputError(f"cannot read {path} with nnU-Net's readers: {e}") from None
    seg, spacing = seg[0], tuple(float(s) for s in properties["spacing"])
    if seg.ndim == 3 and seg.shape[0] == 1 and spacing[0] == _NNUNET_2D_SPACING:
        seg, spacing = seg[0], spacing[1:]  # a 2D image: drop nnU-Net's dummy axis
    return seg, spacing


def _read_by_nnunet(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(NNUNET_READER_ENDINGS)


def read_geometry(path: str | os.PathLike) -> Geometry:
    """Grid of a segmentation file of any dimension (after checking the file is complete).

    From the header for SimpleITK's formats; for the others from the file as nnU-Net
    reads it, with origin 0 and identity direction (they store neither).
    """
    if not _read_by_nnunet(path):
        return _read_geometry(path, ndim=None)
    seg, spacing = _read_with_nnunet(path)
    ndim = seg.ndim
    return Geometry(tuple(reversed(seg.shape)), tuple(reversed(spacing)), (0.0,) * ndim,
                    tuple(float(v) for v in np.eye(ndim).ravel()))


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
        difference = geometry_mismatch(read_geometry(ref_path), read_geometry(pred_path))
        if difference is not None:
            problems.append(f"{ref_path} and {pred_path}: {difference}")
    if problems:
        more = f" (and {len(problems) - 1} more pair(s))" if len(problems) > 1 else ""
        raise InputError(f"reference and prediction geometry differ: {problems[0]}{more}")


def read_segmentation(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...]]:
    """Label map of a file and its spacing, both in array axis order.

    Returns
    -------
    labels : ndarray of int
        2D or 3D.
    spacing : tuple of float
        Spacing per array axis in mm.
    """
    if _read_by_nnunet(path):
        array, spacing = _read_with_nnunet(path)
    else:
        check_complete(path)
        try:
            with quiet_itk():
                image = sitk.ReadImage(os.fspath(path))
        except RuntimeError as e:
            raise _sitk_error(path, e) from None
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"{path}: segmentation must have one component per voxel")
        array = sitk.GetArrayFromImage(image)
        spacing = tuple(reversed([float(s) for s in image.GetSpacing()]))
    if array.ndim not in (2, 3):
        raise InputError(f"{path}: segmentation must be 2D or 3D, got {array.ndim}D")
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise InputError(f"{path}: segmentation holds non-integer values")
        array = rounded.astype(np.int32)
    return array, spacing
