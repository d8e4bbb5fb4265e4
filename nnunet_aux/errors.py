"""Exceptions for problems with the user's input (files, folders, settings).

The ``nnunet_aux`` command prints these as one-line messages without a traceback; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: a missing or malformed file, a dataset that does not fit, a bad setting.

    A subclass of :class:`ValueError`, so library callers can catch either.
    """


class DatasetExistsError(InputError):
    """The target dataset folder (same ID, any name) exists and overwriting was not asked for."""
