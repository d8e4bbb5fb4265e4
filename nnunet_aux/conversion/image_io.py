"""Reading and writing volumes with SimpleITK, keeping their geometry."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

#: File endings SimpleITK reads and writes as 3D volumes (what this package converts).
SITK_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr")


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a volume in SimpleITK's (x, y, z) order.

    Attributes
    ----------
    size, spacing, origin, direction : tuple
        As ``sitk.Image.GetSize()`` etc.
    """

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        """Geometry of a SimpleITK image."""
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape ``(z, y, x)``."""
        return tuple(reversed(self.size))

    @property
    def spacing_zyx(self) -> tuple[float, ...]:
        """Spacing in array order ``(z, y, x)``, mm."""
        return tuple(reversed(self.spacing))

    def apply(self, image: sitk.Image) -> sitk.Image:
        """Give ``image`` this spacing, origin and direction (in place; returned)."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def check_file_ending(path: Path | str) -> str:
    """The file ending of ``path`` if SimpleITK handles it, else a clear error."""
    name = str(path)
    for ending in SITK_FILE_ENDINGS:
        if name.endswith(ending):
            return ending
    raise InputError(f"{path}: unsupported file type; supported endings: {', '.join(SITK_FILE_ENDINGS)}")


def check_complete(path: Path | str) -> None:
    """Stop when an image file is truncated or corrupt, before anything uses it.

    SimpleITK reads a ``.nii.gz`` whose gzip stream ends early without complaint and fills
    the missing voxels with zeros (a label map silently loses structures). So every gzip
    stream is decompressed to its end-of-stream marker (its CRC checked), and an
    uncompressed NIfTI file must be as long as its header says. Cost: one decompression,
    about 0.3 s for a 100 MB volume.

    Parameters
    ----------
    path : path-like
        An image file.

    Raises
    ------
    InputError
        Naming the file: missing, truncated or corrupt.

    Examples
    --------
    >>> import gzip, tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     f = os.path.join(d, "x.nii.gz")
    ...     with open(f, "wb") as out:
    ...         _ = out.write(gzip.compress(bytes(1000))[:-20])
    ...     check_complete(f)
    Traceback (most recent call last):
    ...
    nnunet_aux.errors.InputError: .../x.nii.gz is truncated or corrupt (Compressed file ended before the end-of-stream marker was reached)
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"missing file {path}")
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                while f.read(1 << 24):
                    pass
        elif name.endswith(".nii"):
            _check_nifti_length(path)
    except (EOFError, OSError, zlib.error) as e:
        raise InputError(f"{path} is truncated or corrupt ({e})") from None


def _check_nifti_length(path: Path) -> None:
    with open(path, "rb") as f:
        header = f.read(544)
    size = path.stat().st_size
    if len(header) < 348:
        raise EOFError(f"{size} bytes, shorter than a NIfTI header")
    for order in ("<", ">"):
        if struct.unpack(order + "i", header[:4])[0] == 348:  # NIfTI-1
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if struct.unpack(order + "i", header[:4])[0] == 540 and len(header) >= 540:  # NIfTI-2
            dims = struct.unpack(order + "8q", header[16:80])
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            offset = int(struct.unpack(order + "q", header[168:176])[0])
            break
    else:
        return  # not a NIfTI header SimpleITK would read either; leave the error to it
    n_dims = max(0, min(int(dims[0]), 7))
    expected = offset + int(np.prod([max(int(d), 1) for d in dims[1:n_dims + 1]], dtype=np.int64)) * bitpix // 8
    if size < expected:
        raise EOFError(f"the header promises {expected} bytes, the file has {size}")


def read_geometry(path: Path | str, ndim: int | None = 3) -> Geometry:
    """Geometry of an image file, read from its header (the file is checked to be complete).

    ``ndim``: the dimension the file must have (None: any); conversion reads volumes,
    evaluation any segmentation nnU-Net writes.
    """
    path = Path(path)
    check_complete(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        raise InputError(f"cannot read {path}: {lines[-1] if lines else 'unreadable'}") from None
    if ndim is not None and reader.GetDimension() != ndim:
        raise InputError(f"{path}: expected a {ndim}D volume, got {reader.GetDimension()}D")
    return Geometry(tuple(int(s) for s in reader.GetSize()), tuple(float(s) for s in reader.GetSpacing()),
                    tuple(float(o) for o in reader.GetOrigin()), tuple(float(d) for d in reader.GetDirection()))


def read_image(path: Path | str) -> sitk.Image:
    """Read a 3D image file, with a clear error naming the file (truncated files included)."""
    path = Path(path)
    check_complete(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise InputError(f"cannot read {path}: {str(e).strip().splitlines()[-1]}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: expected a single-channel 3D volume")
    return image


def read_label_map(path: Path | str) -> tuple[np.ndarray, Geometry]:
    """Read a label map as an integer array ``(z, y, x)`` and its geometry.

    Float files are accepted only when every value is a whole number.

    Parameters
    ----------
    path : path-like
        A 3D label file.

    Returns
    -------
    label : ndarray of int64
    geometry : Geometry

    Examples
    --------
    >>> import tempfile, os
    >>> g = Geometry((3, 2, 1), (0.5, 0.5, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_array(np.ones((1, 2, 3), np.uint8), g, os.path.join(d, "l.nii.gz"))
    ...     label, geometry = read_label_map(os.path.join(d, "l.nii.gz"))
    >>> label.shape, geometry.spacing_zyx
    ((1, 2, 3), (2.0, 0.5, 0.5))
    """
    image = read_image(path)
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise InputError(f"{path}: label map holds non-integer values (pixel type {array.dtype})")
    if array.size and array.min() < 0:
        raise InputError(f"{path}: label map holds negative values ({int(array.min())})")
    return array.astype(np.int64, copy=False), Geometry.of(image)


def check_same_grid(image: Geometry, label: Geometry, image_file: Path | str, label_file: Path | str) -> None:
    """Stop with a clear message when a label does not lie on its image's grid.

    Shape and spacing must agree (origin and direction are taken from the image when
    writing, as nnU-Net only warns about them).
    """
    if image.size != label.size:
        raise InputError(
            f"shape mismatch: {label_file} has shape {label.shape}, its image {image_file} has {image.shape}"
        )
    if not np.allclose(image.spacing, label.spacing, rtol=1e-4, atol=1e-5):
        raise InputError(
            f"spacing mismatch: {label_file} has spacing {label.spacing}, its image {image_file} "
            f"has {image.spacing}"
        )


def write_array(array: np.ndarray, geometry: Geometry, path: Path | str) -> None:
    """Write an array ``(z, y, x)`` with the given geometry (compressed where the format allows)."""
    if tuple(array.shape) != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not fit geometry shape {geometry.shape}")
    image = geometry.apply(sitk.GetImageFromArray(array))
    sitk.WriteImage(image, str(path), useCompression=True)


def write_image(image: sitk.Image, path: Path | str) -> None:
    """Write a SimpleITK image (compressed where the format allows)."""
    sitk.WriteImage(image, str(path), useCompression=True)


def link_or_copy(source: Path | str, target: Path | str, check: bool = True) -> None:
    """Hard-link ``source`` to ``target``, or copy it where links are not possible.

    With ``check`` (default) the source is first checked with :func:`check_complete`;
    callers that have just checked it pass False.
    """
    source, target = Path(source), Path(target)
    if check:
        check_complete(source)
    elif not source.is_file():
        raise InputError(f"missing file {source}")
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
