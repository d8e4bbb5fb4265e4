"""The environment nnU-Net's commands run with, and nnU-Net's trainer search as a check.

Commands themselves run through :mod:`nnunet_aux.experiment.process` (one runner for the
demo, the experiment and the benchmarks); trainings are jobs (:mod:`.jobs`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Mapping, Sequence

from ..errors import InputError
from .process import tail_text

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
