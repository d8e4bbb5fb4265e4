"""Reading segmentations in every format nnU-Net writes them in.

Medical formats (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ``.mhd``, ``.gipl``) are read with
SimpleITK, whose header gives the whole grid (size, spacing, origin, direction); the others
(``.png``, ``.bmp``, ``.tif``, ``.tiff``: 2D natural images and 3D TIFF) with nnU-Net's own
reader classes (:mod:`nnunetv2.imageio`), so they come out exactly as nnU-Net reads them; they
carry a size and a spacing but no origin or direction. Arrays come in array axis order
(``z, y, x`` for a volume) with spacings to match. Every file is checked to be complete
(:func:`~nnunet_aux.io.images.check_complete`) before it is read.
"""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .images import Geometry, check_complete, quiet_itk, read_error
from .images import read_geometry as _read_sitk_geometry

#: Formats read with SimpleITK (full header).
SITK_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".gipl")
#: Formats read with nnU-Net's reader classes (``NaturalImage2DIO``, ``Tiff3DIO``).
NNUNET_READER_ENDINGS = (".png", ".bmp", ".tif", ".tiff")
#: File endings recognised as segmentations.
SEGMENTATION_ENDINGS = SITK_ENDINGS + NNUNET_READER_ENDINGS
#: nnU-Net's spacing of the dummy first axis of 2D images.
_NNUNET_2D_SPACING = 999


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


def segmentation_geometry(path: str | os.PathLike) -> Geometry:
    """Grid of a segmentation file of any dimension (after checking the file is complete).

    From the header for SimpleITK's formats; for the others from the file as nnU-Net
    reads it, with origin 0 and identity direction (they store neither).
    """
    if not _read_by_nnunet(path):
        return _read_sitk_geometry(path, ndim=None)
    seg, spacing = _read_with_nnunet(path)
    ndim = seg.ndim
    return Geometry(tuple(reversed(seg.shape)), tuple(reversed(spacing)), (0.0,) * ndim,
                    tuple(float(v) for v in np.eye(ndim).ravel()))


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
            raise read_error(os.fspath(path), e) from None
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
