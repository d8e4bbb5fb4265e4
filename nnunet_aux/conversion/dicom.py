"""Reading DICOM series whose slice files have no extension (as in 3D-IRCADb)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

_TRAILING_NUMBER = re.compile(r"(\d+)$")
_POSITION = "0020|0032"
_ORIENTATION = "0020|0037"


def slice_files(folder: Path | str) -> list[Path]:
    """The slice files of a DICOM series folder, in slice order.

    Files are ordered by their position along the slice normal
    (``ImagePositionPatient`` projected on the cross product of the two
    ``ImageOrientationPatient`` directions). Where any file lacks these tags, the
    number at the end of the file name orders them (``image_2`` before ``image_10``).

    Parameters
    ----------
    folder : path-like
        Folder holding one series; hidden files and subfolders are skipped.

    Returns
    -------
    files : list of Path
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"missing DICOM folder {folder}")
    files = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]
    if not files:
        raise InputError(f"DICOM folder {folder} holds no files")
    positions = [_slice_position(f) for f in files]
    if all(p is not None for p in positions) and len(set(positions)) == len(positions):
        order = np.argsort(np.asarray(positions, dtype=float), kind="stable")
        return [files[i] for i in order]
    numbers = [_TRAILING_NUMBER.search(f.name) for f in files]
    if any(n is None for n in numbers):
        bad = next(f for f, n in zip(files, numbers) if n is None)
        raise InputError(f"{bad}: no slice position in the DICOM header and no slice number in the file name")
    return [f for _, f in sorted(zip((int(n.group(1)) for n in numbers), files))]


def _slice_position(path: Path) -> float | None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("GDCMImageIO")  # files have no extension: name the reader
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"{path} is not a readable DICOM file") from None
    if not (reader.HasMetaDataKey(_POSITION) and reader.HasMetaDataKey(_ORIENTATION)):
        return None
    try:
        position = np.array([float(v) for v in reader.GetMetaData(_POSITION).split("\\")])
        orientation = np.array([float(v) for v in reader.GetMetaData(_ORIENTATION).split("\\")])
    except ValueError:
        return None
    if position.size != 3 or orientation.size != 6:
        return None
    return float(np.dot(position, np.cross(orientation[:3], orientation[3:])))


def read_dicom_series(folder: Path | str) -> sitk.Image:
    """Read one DICOM series (slice files in any naming) as a 3D SimpleITK image.

    Parameters
    ----------
    folder : path-like
        Folder of the series' slice files (see :func:`slice_files` for the order).

    Returns
    -------
    image : SimpleITK.Image

    Examples
    --------
    >>> ct = read_dicom_series("3Dircadb1/3Dircadb1.1/PATIENT_DICOM")  # doctest: +SKIP
    >>> ct.GetSize()  # doctest: +SKIP
    (512, 512, 129)
    """
    files = slice_files(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(f) for f in files])
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise InputError(f"cannot read the DICOM series in {folder}: {str(e).strip().splitlines()[-1]}") from None
    if image.GetDimension() == 2:  # a single slice
        image = sitk.JoinSeries(image)
    return image
