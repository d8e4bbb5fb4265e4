"""The one way this package runs nnU-Net's console commands: logged, detached from stdin,
in a process group of their own that dies with the caller.

nnU-Net reads its folders from environment variables when ``nnunetv2.paths`` is first
imported, so every nnU-Net step runs as a subprocess with an explicit environment. The
demo, ``nnunet_aux experiment`` and the outcome benchmark all go through
:func:`run_logged`:

- stdin is closed (``/dev/null``): inside a batch job nnU-Net must never wait for an answer;
- the command gets its own process group (``start_new_session``), so nnU-Net's data-loader
  workers and DDP ranks are killed together with it: when the caller is interrupted
  (Ctrl-C, SIGTERM, submitit's timeout/pre-emption signal), the whole group gets SIGTERM,
  then SIGKILL after a grace period, and no orphan keeps the GPU;
- all output is appended to a log file, line-buffered, so a killed run's log ends where
  the run ended.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from ..errors import InputError

#: Seconds between SIGTERM and SIGKILL when a command's process group is stopped.
KILL_GRACE_SECONDS = 10.0


def nnunet_command(name: str) -> list[str]:
    """An nnU-Net console script, preferably the one installed beside this Python.

    The script beside the running interpreter is preferred, so that a job uses the nnU-Net
    of its own environment even when that environment is not activated.

    Parameters
    ----------
    name : str
        E.g. ``nnUNetv2_train``.

    Returns
    -------
    command : list of str

    Examples
    --------
    >>> os.path.basename(nnunet_command("nnUNetv2_train")[0])
    'nnUNetv2_train'
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(name)
    if found is None:
        raise InputError(f"{name} was found neither beside {sys.executable} nor on PATH; is nnunetv2 installed?")
    return [found]


def kill_process_group(process: subprocess.Popen, grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM to a process's group, SIGKILL after ``grace`` seconds if it still runs."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.wait(timeout=wait)
            # the leader is gone; make sure no worker of its group is left either
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """Turn SIGTERM into :class:`SystemExit` while the block runs (main thread, default handler only).

    Python's default SIGTERM action ends the process without running ``finally`` blocks,
    which would orphan the command's process group. A handler someone else installed
    (submitit's, a test runner's) is left alone.
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_logged(command: Sequence[str], env: Mapping[str, str], log_file: str | os.PathLike, *,
               echo: Callable[[str], None] | None = None, append: bool = True,
               tail: collections.deque | None = None) -> int:
    """Run a command in its own process group, appending its output to a log file.

    Parameters
    ----------
    command : sequence of str
        Program and arguments.
    env : mapping
        The command's whole environment.
    log_file : path-like
        Receives the command line, all output (stdout and stderr) and the exit code.
    echo : callable, optional
        Called with every output line as it comes (e.g. to show nnU-Net's progress).
    append : bool, optional
        Append to the log (the log of a resumed fold keeps the earlier attempts) or start it anew.
    tail : collections.deque, optional
        Receives the output lines (give it a ``maxlen``), e.g. for an error message.

    Returns
    -------
    returncode : int

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     run_logged([sys.executable, "-c", "print('hi')"], dict(os.environ), os.path.join(d, "x.log"))
    0
    """
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a" if append else "w", encoding="utf-8", buffering=1) as log, sigterm_as_exception():
        log.write(f"$ {' '.join(map(str, command))}\n")
        process = subprocess.Popen([str(c) for c in command], env=dict(env), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                                   errors="replace", bufsize=1, start_new_session=True)
        assert process.stdout is not None
        try:
            for line in process.stdout:  # tqdm's carriage returns come through inside the lines
                log.write(line)
                text = line.rstrip("\n")
                if tail is not None:
                    tail.append(text.split("\r")[-1])
                if echo is not None:
                    echo(text)
            returncode = process.wait()
        except BaseException:
            log.write("[interrupted: stopping the command's process group]\n")
            kill_process_group(process)
            raise
        finally:
            process.stdout.close()
        log.write(f"[exit code {returncode}]\n")
    return returncode


def tail_text(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines of a text."""
    return "\n".join(text.splitlines()[-lines:])


def log_tail(path: str | os.PathLike, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "\n".join(line.rstrip("\n") for line in collections.deque(f, maxlen=lines))
    except FileNotFoundError:
        return ""
