"""Write a dataset into a hidden staging folder beside its target, then rename it into place.

nnU-Net looks for ``DatasetXXX_*`` folders; a half-written dataset must never carry that
name. Every converter therefore writes into ``.DatasetXXX_Name.<random>.partial`` in the
same raw folder (so the final rename is atomic) through :func:`staged_folder`, which

* removes the staging folder on any exception, Ctrl-C and SIGTERM (turned into an
  exception while the folder exists);
* gives the folder the mode the umask gives a new folder (``tempfile`` alone makes it 0700);
* records the writing process (``.nnunet_aux_owner``: PID and host) in the folder, so a
  later conversion of the same target removes what a killed one (SIGKILL, power loss)
  left behind, when that process is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import InputError
from ..io.files import make_folder, make_temp_folder, os_error_message

#: File inside a staging folder naming the process that writes it: ``"<pid> <host>"``.
OWNER_FILE = ".nnunet_aux_owner"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def stale_partials(root: Path, name: str) -> list[Path]:
    """Staging folders of dataset ``name`` in ``root`` whose writing process is gone.

    Only folders whose owner file names this host and a PID that no longer runs count;
    anything else may still be written to and is left alone.
    """
    stale = []
    if not root.is_dir():
        return stale
    for folder in sorted(root.glob(f".{name}.*.partial")):
        try:
            pid_text, host = (folder / OWNER_FILE).read_text(encoding="utf-8").split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if host == socket.gethostname() and pid != os.getpid() and not _pid_alive(pid):
            stale.append(folder)
    return stale


def remove_stale_partials(root: Path, name: str) -> list[Path]:
    """Remove (with a message on stderr) what killed conversions of ``name`` left in ``root``."""
    removed = []
    for folder in stale_partials(root, name):
        shutil.rmtree(folder, ignore_errors=True)
        print(f"removed {folder}, left by an interrupted conversion of {name}", file=sys.stderr)
        removed.append(folder)
    return removed


class _Terminated(SystemExit):
    """SIGTERM arrived while a dataset was being written (exit code 143, as for a plain SIGTERM)."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    # Python's default for SIGTERM is to die without running `finally` blocks; raising
    # instead lets the staging folder be removed. Only the main thread may set handlers.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def staged_folder(root: str | os.PathLike, name: str, existing: Sequence[Path] = ()) -> Iterator[Path]:
    """A fresh hidden folder to write dataset ``name`` into; renamed to ``root/name`` on success.

    Parameters
    ----------
    root : path-like
        The raw data folder (created if missing).
    name : str
        Final folder name, ``DatasetXXX_Name``.
    existing : sequence of Path
        Datasets to replace (same ID); removed only once the new one is in place.

    Yields
    ------
    folder : Path
        The staging folder. When the ``with`` block ends without an exception it becomes
        ``root/name``; otherwise (Ctrl-C and SIGTERM included) it is removed.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as raw:
    ...     with staged_folder(raw, "Dataset001_X") as out:
    ...         _ = (out / "dataset.json").write_text("{}")
    ...     sorted(p.name for p in Path(raw).iterdir()), sorted(p.name for p in (Path(raw) / "Dataset001_X").iterdir())
    (['Dataset001_X'], ['dataset.json'])
    """
    root = make_folder(root)
    remove_stale_partials(root, name)
    # The folder gets the umask's mode (mkdtemp alone makes it 0700, and the rename keeps it).
    out = make_temp_folder(root, f".{name}.", ".partial")
    try:
        with _sigterm_raises():
            try:
                (out / OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n", encoding="utf-8")
            except OSError as e:
                raise InputError(os_error_message(e, out / OWNER_FILE)) from None
            yield out
            (out / OWNER_FILE).unlink()
            move_into_place(out, root / name, existing)
    except (OSError, InputError) as e:
        shutil.rmtree(out, ignore_errors=True)
        # Name files by the dataset they were written for, not by the staging folder just removed.
        if isinstance(e, InputError) and str(out) not in str(e):
            raise
        message = os_error_message(e) if isinstance(e, OSError) else str(e)
        kind = type(e) if isinstance(e, InputError) else InputError
        raise kind(message.replace(str(out), str(root / name))) from None
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def move_into_place(new: Path, target: Path, existing: Sequence[Path]) -> None:
    """Rename ``new`` to ``target``, first moving ``existing`` datasets aside and then deleting them."""
    trash = []
    try:
        for folder in existing:
            aside = make_temp_folder(folder.parent, f".{folder.name}.", ".old")
            os.rename(folder, aside / folder.name)
            trash.append((aside, folder))
        os.rename(new, target)
    except BaseException:
        for aside, folder in trash:  # put the old datasets back
            os.rename(aside / folder.name, folder)
            aside.rmdir()
        raise
    for aside, _ in trash:
        shutil.rmtree(aside, ignore_errors=True)
