"""Exceptions for problems with the user's input (files, folders, settings).

The ``nnunet_aux`` command prints these as one-line messages without a traceback; any
other exception is a bug and keeps its traceback. Input that is legal but surely not what
was meant (a threshold above every voxel, a dataset without vessel voxels) gives an
:class:`InputWarning`, which the command prints as one ``warning:`` line.
"""

from __future__ import annotations

import warnings


class InputError(ValueError):
    """Bad input: a missing or malformed file, a dataset that does not fit, a bad setting.

    A subclass of :class:`ValueError`, so library callers can catch either.
    """


class DatasetExistsError(InputError):
    """The target dataset folder (same ID, any name) exists and overwriting was not asked for."""


class InputWarning(UserWarning):
    """Legal input whose result is surely not what the user meant (e.g. all dummy labels empty)."""


def warn(message: str) -> None:
    """Issue an :class:`InputWarning` (the ``nnunet_aux`` command prints it as one line)."""
    warnings.warn(message, InputWarning, stacklevel=3)
