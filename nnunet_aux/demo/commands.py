"""nnU-Net's console commands for the demo: its environment, and failures as exceptions (the
processes themselves run through :mod:`nnunet_aux.experiment.process`)."""

from __future__ import annotations

import collections
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence, TextIO

from ..experiment.process import nnunet_command, run_logged

#: Lines of a failed command's output repeated in the error message.
TAIL_LINES = 25


class CommandFailedError(RuntimeError):
    """An nnU-Net command exited with an error; the message holds its last lines and log file."""


def nnunet_executable(name: str) -> str:
    """Path of an nnU-Net console script, e.g. ``nnUNetv2_train`` (the one beside this Python first).

    Examples
    --------
    >>> os.path.basename(nnunet_executable("nnUNetv2_train"))
    'nnUNetv2_train'
    """
    return nnunet_command(name)[0]


def nnunet_environment(workdir: str | os.PathLike, trainer_paths: Sequence[str],
                       extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for nnU-Net commands whose data folders all lie inside ``workdir``.

    nnU-Net reads its folders from the environment only; setting them here, for the
    subprocesses alone, keeps the user's own ``nnUNet_raw`` etc. untouched.

    Parameters
    ----------
    workdir : path-like
        Folder that gets ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results``.
    trainer_paths : sequence of str
        Folders for ``nnUNet_extTrainer`` (searched in this order).
    extra : mapping, optional
        Further variables (e.g. ``nnUNet_n_proc_DA``).

    Returns
    -------
    env : dict
        A copy of ``os.environ`` with the nnU-Net variables set.

    Examples
    --------
    >>> env = nnunet_environment("/tmp/demo", ["/a", "/b"])
    >>> env["nnUNet_results"], env["nnUNet_extTrainer"] == os.pathsep.join(["/a", "/b"])
    ('/tmp/demo/nnUNet_results', True)
    """
    root = Path(workdir).absolute()
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[name] = str(root / name)
    env["nnUNet_extTrainer"] = os.pathsep.join(trainer_paths)
    # Python output through a pipe is block-buffered; unbuffered keeps the progress live.
    env["PYTHONUNBUFFERED"] = "1"
    # nnU-Net prints tqdm bars (non-ASCII); keep child I/O UTF-8 even under an ASCII locale.
    env.setdefault("PYTHONIOENCODING", "utf-8")
    env.update(extra or {})
    return env


def run_command(command: Sequence[str], env: Mapping[str, str], log_file: str | os.PathLike,
                stream: TextIO | None = sys.stdout) -> None:
    """Run a command through :func:`nnunet_aux.experiment.process.run_logged`, showing its output.

    Parameters
    ----------
    command : sequence of str
        Program and arguments.
    env : mapping
        The command's environment.
    log_file : path-like
        File that receives the command line and all output (stdout and stderr); started anew.
    stream : text stream or None, optional
        Where to show the output live; None shows nothing.

    Raises
    ------
    CommandFailedError
        The command exited with a non-zero status; the message holds the last
        :data:`TAIL_LINES` lines of output and the log file's path.
    """
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    echo = None if stream is None else (lambda line: (stream.write(line + "\n"), stream.flush()))
    status = run_logged(command, env, log_file, echo=echo, append=False, tail=tail)
    if status != 0:
        raise CommandFailedError(
            f"{Path(command[0]).name} failed (exit status {status}). Last lines:\n"
            + "\n".join(tail) + f"\nFull output: {log_file}"
        )
