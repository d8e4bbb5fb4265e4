"""Reading and writing volumes with SimpleITK, keeping their geometry.

Every file is checked to be complete (:func:`check_complete`) before anything reads it, and
every write is read back before it is renamed into place (:func:`write_checked`).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .files import atomic_write, os_error_message

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
    """Stop when an image file is truncated, corrupt or lies in its header, before anything reads it.

    The one check every file passes before SimpleITK (or nnU-Net's readers) read it:

    * every gzip stream is decompressed to its end-of-stream marker (its CRC checked):
      SimpleITK reads a ``.nii.gz`` whose stream ends early without complaint and fills
      the missing voxels with zeros;
    * a NIfTI file (``.nii`` or ``.nii.gz``) must hold as many voxel bytes as its header
      promises: a short payload would be zero-filled, a header claiming 1000 x 1000 x 500
      voxels over a small payload would make the reader allocate them first;
    * a NIfTI voxel size (``pixdim``) of an axis with more than one voxel must be a finite
      non-zero number: ITK reads 0 as 1.0 mm (negative sizes are legal and read as their
      absolute value with the axis's direction flipped, see :func:`read_geometry`);
    * a NIfTI file of floating-point voxels must hold no NaN or infinity.

    Cost: one decompression, about 0.3 s for a 100 MB volume.

    Parameters
    ----------
    path : path-like
        An image file.

    Raises
    ------
    InputError
        Naming the file and what is wrong.

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
    """  # noqa: E501 (the doctest shows the message as it comes)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"missing file {path}")
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                _check_stream(f, path, nifti=name.endswith(".nii.gz"))
        elif name.endswith(".nii"):
            with open(path, "rb") as f:
                _check_stream(f, path, nifti=True)
    except (EOFError, OSError, zlib.error) as e:
        raise InputError(f"{path} is truncated or corrupt ({e})") from None


#: NIfTI datatype codes of floating-point voxels -> numpy dtype (without byte order).
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


@dataclass(frozen=True)
class _NiftiHeader:
    dims: tuple[int, ...]
    pixdim: tuple[float, ...]
    datatype: int
    bitpix: int
    offset: int
    order: str

    @property
    def payload_bytes(self) -> int:
        n = 1
        for d in self.dims:
            n *= max(d, 1)
        return n * self.bitpix // 8


def _nifti_header(header: bytes) -> _NiftiHeader | None:
    """The fields of a NIfTI-1 or NIfTI-2 header that size and space the voxels; None if not NIfTI."""
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:  # NIfTI-1
            dims = struct.unpack(order + "8h", header[40:56])
            datatype, bitpix = struct.unpack(order + "2h", header[70:74])
            pixdim = struct.unpack(order + "8f", header[76:108])
            offset = struct.unpack(order + "f", header[108:112])[0]
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:  # NIfTI-2
            datatype, bitpix = struct.unpack(order + "2h", header[12:16])
            dims = struct.unpack(order + "8q", header[16:80])
            pixdim = struct.unpack(order + "8d", header[104:168])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    n_dims = max(0, min(int(dims[0]), 7))
    offset = int(offset) if np.isfinite(offset) else 0
    return _NiftiHeader(tuple(int(d) for d in dims[1:n_dims + 1]), tuple(float(p) for p in pixdim[1:n_dims + 1]),
                        int(datatype), int(bitpix), max(offset, 348), order)


def _check_stream(f, path: Path, nifti: bool) -> None:
    """Read ``f`` to its end; for a NIfTI file check the header against the payload."""
    chunk = 1 << 24
    head = f.read(544) if nifti else b""
    header = _nifti_header(head) if nifti else None
    if nifti and header is None and len(head) < 348:
        raise EOFError(f"{len(head)} bytes, shorter than a NIfTI header")
    if header is None:
        while f.read(chunk):
            pass
        return
    for axis, (size, spacing) in enumerate(zip(header.dims[:3], header.pixdim[:3])):
        if size > 1 and (spacing == 0 or not np.isfinite(spacing)):
            raise InputError(f"{path}: the header gives axis {axis} ({'xyz'[axis]}) a voxel size of {spacing:g} mm "
                             f"(NIfTI pixdim[{axis + 1}]); a voxel size must be a finite non-zero number")
    expected = header.offset + header.payload_bytes
    float_type = _NIFTI_FLOATS.get(header.datatype)
    finite = _FiniteCheck(np.dtype(header.order + float_type)) if float_type else None
    seen = len(head)
    if finite is not None:
        finite.feed(head[header.offset:expected])
    while True:
        data = f.read(chunk)
        if not data:
            break
        if finite is not None:
            finite.feed(data[max(header.offset - seen, 0):max(expected - seen, 0)])
        seen += len(data)
    if seen < expected:
        shape = " x ".join(str(d) for d in header.dims)
        raise EOFError(f"the header promises {expected} bytes ({shape} voxels of {header.bitpix} bits), "
                       f"the {'data hold' if path.name.lower().endswith('.gz') else 'file has'} {seen}")
    if finite is not None and not finite.ok:
        raise InputError(f"{path} holds NaN or infinite voxel values")


class _FiniteCheck:
    """Whether a byte stream of floats, fed in pieces of any length, holds only finite values."""

    def __init__(self, dtype: np.dtype):
        self.dtype, self.pending, self.ok = dtype, b"", True

    def feed(self, data: bytes) -> None:
        if not self.ok or not data:
            return
        data = self.pending + data
        usable = len(data) - len(data) % self.dtype.itemsize
        self.ok = bool(np.isfinite(np.frombuffer(data[:usable], dtype=self.dtype)).all())
        self.pending = data[usable:]


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """No ITK warnings on stderr inside the block (e.g. "unexpected scales in sform"): the checks
    here say what matters in one line, and a command's error output stays one line."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def positive_spacing(spacing: Sequence[float],
                     direction: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Spacing and direction with every voxel size positive: a negative size flips its axis instead.

    ITK's full read of a NIfTI with a negative ``pixdim`` gives the positive size and a
    flipped direction column, its header-only read the negative size; reading spacing one
    way makes two identical headers agree.

    Examples
    --------
    >>> positive_spacing((-0.8, 0.8, 1.5), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    ((0.8, 0.8, 1.5), (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    """
    spacing = [float(v) for v in spacing]
    n = len(spacing)
    matrix = np.asarray(direction, dtype=np.float64).reshape(n, n) if len(direction) == n * n else None
    for axis, value in enumerate(spacing):
        if value < 0:
            spacing[axis] = -value
            if matrix is not None:
                matrix[:, axis] = -matrix[:, axis]
    flat = tuple(direction) if matrix is None else tuple(float(v) + 0.0 for v in matrix.ravel())
    return tuple(spacing), tuple(float(v) for v in flat)


def read_error(path: Path | str, error: RuntimeError) -> InputError:
    """``cannot read FILE: reason`` from the last line of a SimpleITK (ITK) exception."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return InputError(f"cannot read {path}: {lines[-1] if lines else 'unreadable'}")


def _check_spacing_read(path: Path, spacing: Sequence[float]) -> None:
    if not all(np.isfinite(spacing)) or any(v == 0 for v in spacing):
        raise InputError(f"{path}: voxel size {tuple(spacing)} mm; every voxel size must be a finite non-zero number")


def read_geometry(path: Path | str, ndim: int | None = 3) -> Geometry:
    """Geometry of an image file, read from its header (the file is checked to be complete).

    ``ndim``: the dimension the file must have (None: any); conversion reads volumes,
    evaluation any segmentation nnU-Net writes. The file must hold one value per voxel
    (no vector images); voxel sizes come out positive (see :func:`positive_spacing`).
    """
    path = Path(path)
    check_complete(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError as e:
        raise read_error(path, e) from None
    if ndim is not None and reader.GetDimension() != ndim:
        raise InputError(f"{path}: expected a {ndim}D volume, got {reader.GetDimension()}D")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(f"{path}: expected one value per voxel, got {reader.GetNumberOfComponents()} components "
                         f"(a vector or RGB image); nnU-Net wants one file per channel")
    _check_spacing_read(path, reader.GetSpacing())
    spacing, direction = positive_spacing(reader.GetSpacing(), reader.GetDirection())
    return Geometry(tuple(int(s) for s in reader.GetSize()), spacing,
                    tuple(float(o) for o in reader.GetOrigin()), direction)


def read_image(path: Path | str, finite: bool = True) -> sitk.Image:
    """Read a 3D single-channel image file, with a clear error naming the file.

    Truncated files, vector images and (with ``finite``) NaN or infinite voxel values
    are refused.
    """
    path = Path(path)
    check_complete(path)
    try:
        with quiet_itk():
            image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise read_error(path, e) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: expected a single-channel 3D volume, got {image.GetDimension()}D with "
                         f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel")
    _check_spacing_read(path, image.GetSpacing())
    if finite:
        array = sitk.GetArrayViewFromImage(image)
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise InputError(f"{path} holds NaN or infinite voxel values")
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
    """Write an array ``(z, y, x)`` with the given geometry (compressed where the format allows).

    Atomic and checked as :func:`write_image`.
    """
    if tuple(array.shape) != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not fit geometry shape {geometry.shape}")
    image = geometry.apply(sitk.GetImageFromArray(array))
    write_image(image, path)


def file_ending(path: Path | str) -> str:
    """The ending of an image file name, two parts for ``.nii.gz`` (``.png`` etc. otherwise)."""
    name = Path(path).name
    return ".nii.gz" if name.lower().endswith(".nii.gz") else Path(name).suffix


def write_checked(path: Path | str, write: Callable[[str], None]) -> None:
    """Write an image file with ``write(temporary name)``, check it, then rename it into place.

    SimpleITK (and zlib under it) ignore failed writes: a full disk or a file-size limit
    leaves a truncated file and no error. The temporary file is therefore read back with
    :func:`check_complete` (gzip stream to its end, NIfTI payload length) before the rename;
    a failure leaves no file (an existing one unchanged) and raises
    :class:`~nnunet_aux.errors.InputError` naming the file. Messages the C libraries print
    on stderr meanwhile are dropped. The file gets the umask's mode.
    """
    path = Path(path)

    def verify(tmp: str) -> None:
        try:
            check_complete(tmp)
        except InputError as e:
            detail = str(e).split("(", 1)[1].rstrip(")") if "(" in str(e) else str(e)
            raise InputError(f"cannot write {path}: the file came out incomplete ({detail}); is the disk full "
                             f"or a file-size limit set?") from None

    def quiet_write(tmp: str) -> None:
        with _stderr_dropped(), quiet_itk():
            write(tmp)

    atomic_write(path, quiet_write, verify=verify, suffix=file_ending(path))


@contextlib.contextmanager
def _stderr_dropped() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null inside the block (C libraries' messages, e.g. NIfTI's
    "** ERROR: NWAD: wrote only ..."), so the command's one error line is all the user sees."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def write_image(image: sitk.Image, path: Path | str) -> None:
    """Write a SimpleITK image (compressed where the format allows), atomically and checked.

    See :func:`write_checked`.
    """
    write_checked(path, lambda tmp: sitk.WriteImage(image, tmp, useCompression=True))


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
        try:
            shutil.copy2(source, target)
        except OSError as e:
            raise InputError(os_error_message(e, target)) from None
