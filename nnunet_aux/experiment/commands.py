"""nnU-Net's command-line tools, run as subprocesses with the user's environment.

nnU-Net reads its folders from environment variables when ``nnunetv2.paths`` is first
imported, so the experiment never trains in its own process: every step is an
``nnUNetv2_train`` subprocess whose output goes to a log file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import InputError
from .layout import INTERRUPTED, NEEDS_VALIDATION, NEW

DEVICES = ("cuda", "cpu", "mps")

# Printed by the trainer check below; everything else on stdout is nnU-Net's search log.
_MISSING_MARKER = "nnunet_aux-missing-trainers:"
_CHECK_SCRIPT = f"""
import sys
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
missing = []
for name in sys.argv[1:]:
    try:
        recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        missing.append(name)
print({_MISSING_MARKER!r} + ",".join(missing))
"""


def nnunet_command(name: str) -> list[str]:
    """An nnU-Net console script, preferably the one installed beside this Python.

    Parameters
    ----------
    name : str
        E.g. ``nnUNetv2_train``.

    Returns
    -------
    command : list of str
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(name)
    if found is None:
        raise InputError(f"{name} was not found beside {sys.executable} or on PATH; is nnunetv2 installed?")
    return [found]


def environment_with_trainer_path(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment whose ``nnUNet_extTrainer`` includes this package's trainers.

    Parameters
    ----------
    env : mapping, optional
        Default ``os.environ``.

    Returns
    -------
    env : dict
        ``nnUNet_extTrainer`` keeps the user's folders first and gets
        :func:`nnunet_aux.training.trainer_path` appended when it is not among them.
    """
    from ..training import trainer_path

    env = dict(os.environ if env is None else env)
    folders = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    ours = trainer_path()
    if not any(os.path.realpath(p) == os.path.realpath(ours) for p in folders):
        folders.append(ours)
    env["nnUNet_extTrainer"] = os.pathsep.join(folders)
    # nnU-Net prints tqdm bars (non-ASCII); keep child I/O UTF-8 even under an ASCII locale.
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def train_command(
    dataset: str,
    configuration: str,
    fold: int,
    trainer: str,
    plans: str,
    device: str,
    state: str,
) -> list[str]:
    """The ``nnUNetv2_train`` call that moves a fold from ``state`` to finished.

    Parameters
    ----------
    dataset : str
        Dataset ID or name.
    configuration, trainer, plans : str
        As for ``nnUNetv2_train`` (``-tr``, ``-p``).
    fold : int
    device : str
        ``cuda``, ``cpu`` or ``mps``.
    state : str
        From :func:`nnunet_aux.experiment.layout.fold_state`.

    Returns
    -------
    command : list of str

    Examples
    --------
    >>> train_command("510", "3d_fullres", 0, "nnUNetTrainer", "nnUNetPlans", "cpu", "interrupted")[1:]
    ['510', '3d_fullres', '0', '-tr', 'nnUNetTrainer', '-p', 'nnUNetPlans', '-device', 'cpu', '--c']
    """
    if device not in DEVICES:
        raise InputError(f"device must be one of {DEVICES}, got {device!r}")
    flags = {NEW: [], INTERRUPTED: ["--c"], NEEDS_VALIDATION: ["--val"]}
    if state not in flags:
        raise InputError(f"no training needed or unknown fold state {state!r} (expected one of {sorted(flags)})")
    return [*nnunet_command("nnUNetv2_train"), str(dataset), configuration, str(fold), "-tr", trainer,
            "-p", plans, "-device", device, *flags[state]]


def missing_trainers(trainers: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The trainers that nnU-Net cannot find with this environment.

    Runs nnU-Net's own search (``nnunetv2.utilities.find_objects``) in a subprocess,
    once for all names, so that a misspelt trainer stops the experiment before hours
    of training the others.

    Parameters
    ----------
    trainers : sequence of str
    env : mapping
        Environment with ``nnUNet_extTrainer`` (:func:`environment_with_trainer_path`).

    Returns
    -------
    missing : list of str
    """
    if not trainers:
        return []
    proc = subprocess.run([sys.executable, "-c", _CHECK_SCRIPT, *trainers], env=dict(env),
                          capture_output=True, text=True, encoding="utf-8", errors="replace")
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_MISSING_MARKER)]
    if proc.returncode != 0 or not lines:
        # The search itself broke (e.g. a trainer module with an import error): say so.
        raise InputError(f"nnU-Net's trainer search failed (exit code {proc.returncode}):\n"
                         + tail_text(proc.stdout + proc.stderr, 30))
    names = lines[-1][len(_MISSING_MARKER):]
    return [name for name in names.split(",") if name]


def tail_text(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines of a text."""
    return "\n".join(text.splitlines()[-lines:])


def log_tail(path: str | os.PathLike, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "\n".join(line.rstrip("\n") for line in deque(f, maxlen=lines))
    except FileNotFoundError:
        return ""


def run_logged(command: Sequence[str], env: Mapping[str, str], log_file: str | os.PathLike,
               echo: Callable[[str], None] | None = None) -> int:
    """Run a command, appending its output (stdout and stderr) to a log file.

    Parameters
    ----------
    command : sequence of str
    env : mapping
    log_file : path-like
        Appended to, so the log of a resumed fold keeps the earlier attempts.
    echo : callable, optional
        Called with every output line (e.g. to show nnU-Net's progress).

    Returns
    -------
    returncode : int
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    # Line-buffered, so the log of a killed run ends where the run ended.
    with open(log_file, "a", encoding="utf-8", buffering=1) as log:
        log.write(f"$ {' '.join(command)}\n")
        with subprocess.Popen(list(command), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, encoding="utf-8", errors="replace", bufsize=1) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if echo is not None:
                    echo(line.rstrip("\n"))
            returncode = proc.wait()
        log.write(f"[exit code {returncode}]\n")
    return returncode
