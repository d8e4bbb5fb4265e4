"""What every command that writes files shares: modes, atomic writes, output paths, locks.

* :func:`default_file_mode`, :func:`default_folder_mode`: what the user's umask gives a new
  file or folder (``tempfile`` makes 0600 files and 0700 folders whatever the umask is;
  renamed into place they would keep those modes).
* :func:`atomic_write`: write a file through a temporary sibling and a rename, so a file is
  complete or absent (a full disk or a file-size limit leaves the old file, or nothing),
  with the mode a plain ``open(path, "w")`` would give (an existing file keeps its mode).
* :func:`check_outputs_apart`: no output may be (or hold, or lie inside) an input.
* :func:`dataset_id_lock`: one conversion at a time per dataset ID in a raw folder.

Failures to write become :class:`~nnunet_aux.errors.InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import InputError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read without changing it where the system allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # the portable way sets it and puts it back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """Mode of a new file under the current umask (``0o644`` under umask ``022``)."""
    return 0o666 & ~current_umask()


def default_folder_mode() -> int:
    """Mode of a new folder under the current umask (``0o755`` under umask ``022``)."""
    return 0o777 & ~current_umask()


def os_error_message(error: OSError, path: str | os.PathLike | None = None) -> str:
    """``cannot write FILE: reason`` for an :class:`OSError` of a write."""
    where = error.filename if error.filename is not None else path
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno == errno.EFBIG:
        reason += " (a file-size limit)"
    return f"cannot write {os.fspath(where) if where is not None else 'a file'}: {reason}"


def make_folder(path: str | os.PathLike) -> Path:
    """Create ``path`` (and missing parents) with the umask's mode; errors name the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"cannot create the folder {path}: a file is in the way") from None
    except OSError as e:
        raise InputError(os_error_message(e, path)) from None
    return path


def make_temp_folder(parent: str | os.PathLike, prefix: str, suffix: str) -> Path:
    """``tempfile.mkdtemp`` in ``parent`` with the umask's folder mode instead of 0700."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
        os.chmod(folder, default_folder_mode())
    except OSError as e:
        raise InputError(os_error_message(e, parent)) from None
    return folder


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *,
                 verify: Callable[[str], None] | None = None, suffix: str = ".tmp") -> Path:
    """Write ``path`` through a temporary file in its folder, then rename it into place.

    Parameters
    ----------
    path : path-like
        The file to write (its folder must exist).
    write : callable
        Called with the temporary file's name; writes the whole content there.
    verify : callable, optional
        Called with the temporary file's name after ``write``; raises when the file is
        not complete (writers that ignore failed writes, e.g. through zlib, are caught so).
    suffix : str, optional
        Ending of the temporary name (some writers pick the format from it, e.g. ``.nii.gz``).

    Returns
    -------
    path : Path

    Raises
    ------
    InputError
        When the file cannot be written (no permission, a full disk, a file-size limit);
        the old file, if any, is unchanged and no temporary file is left.
    """
    path = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = default_file_mode()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as e:
        raise InputError(os_error_message(e, path)) from None
    os.close(fd)
    try:
        write(tmp)
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise InputError(os_error_message(e, path)) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically with :func:`atomic_write` (a short write is an error)."""
    data = text.encode("utf-8")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def verify(tmp: str) -> None:
        if os.path.getsize(tmp) != len(data):
            raise OSError(errno.EIO, f"{len(data)} bytes written, {os.path.getsize(tmp)} on disk", str(path))

    return atomic_write(path, write, verify=verify)


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def check_outputs_apart(outputs: Iterable[tuple[str | os.PathLike, str]],
                        inputs: Iterable[tuple[str | os.PathLike, str]]) -> None:
    """Stop before anything is written when an output would overwrite an input.

    An output clashes with an input when both are the same file (after following links;
    hard links to one file count as the same file), or when the output would be written
    inside an input file (``-o`` naming an input file as a folder). Writing beside inputs,
    or into the folder of an input, is fine.

    Parameters
    ----------
    outputs : iterable of (path, what)
        Files or folders to be written, with how the user named them (``"-o"``).
    inputs : iterable of (path, what)
        Files read, with what they are (``"reference"``, ``"dataset.json"``).

    Raises
    ------
    InputError
        Naming the output, the setting and the input it would destroy.

    Examples
    --------
    >>> check_outputs_apart([("/d/out.json", "-o")], [("/d/ref.nii.gz", "reference")])
    >>> check_outputs_apart([("/d/ref.nii.gz", "-o")], [("/d/ref.nii.gz", "reference")])
    Traceback (most recent call last):
    ...
    nnunet_aux.errors.InputError: -o /d/ref.nii.gz would overwrite the reference /d/ref.nii.gz; choose another output
    """
    inputs = [(Path(p), _real(p), what) for p, what in inputs]
    for out, out_what in outputs:
        out_real = _real(out)
        out_exists = out_real.exists()
        for given, real, what in inputs:
            clash = out_real == real or (real in out_real.parents and not real.is_dir())
            if not clash and out_exists and out_real.is_file():
                with contextlib.suppress(OSError):
                    clash = os.path.samefile(out_real, real)
            if clash:
                raise InputError(f"{out_what} {out} would overwrite the {what} {given}; choose another output")


def _acquire(path: Path, holder: str) -> int:
    """Open and lock ``path`` (non-blocking); the file must still be the one at ``path`` once locked."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, default_file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                other = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            except OSError:
                other = ""
            os.close(fd)
            raise InputError(f"{holder} is being written by another conversion ({other or 'a running process'}); "
                             f"wait for it to finish or pick another ID") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder before us removed it while we waited: take the new one


@contextlib.contextmanager
def dataset_id_lock(root: str | os.PathLike, dataset_id: int) -> Iterator[Path]:
    """Hold the lock of dataset ID ``dataset_id`` in raw folder ``root`` (created if missing).

    Two conversions to the same ID (any name) never run at once: the second stops at once
    with a message naming the first one's process. The lock is a hidden file
    ``.DatasetXXX.lock`` locked with ``flock`` (released by the system when the process
    dies, however it dies) and removed when the block ends.

    Yields
    ------
    root : Path
    """
    import socket

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(f"the raw data folder {root} is a file, not a folder")
    make_folder(root)
    check_writable_folder(root, "raw data folder")
    path = root / f".Dataset{int(dataset_id):03d}.lock"
    try:
        fd = _acquire(path, f"dataset ID {int(dataset_id)} in {root}")
    except OSError as e:
        raise InputError(os_error_message(e, path)) from None
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield root
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """Stop when files cannot be created in ``folder`` (or, if missing, in its nearest existing parent)."""
    folder = Path(os.path.abspath(os.fspath(folder)))
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot create the {what} {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into {existing} (permission denied)")
