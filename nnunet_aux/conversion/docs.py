"""Parameter descriptions shared by the conversion functions' docstrings.

A line ``%(name)s`` alone in a docstring decorated with :func:`fill_doc` is replaced by
``PARAMETERS[name]``, indented like the placeholder.
"""

from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

PARAMETERS = {
    "settings": "settings : DecompositionSettings, optional\n    Number of scales and threshold mode.",
    "raw_root": "raw_root : path-like, optional\n    Raw data folder; defaults to ``$nnUNet_raw``.",
    "raw_root_output": "raw_root : path-like, optional\n    Output raw data folder; defaults to ``$nnUNet_raw``.",
    "overwrite": "overwrite : bool, optional\n    Replace an existing dataset with the target's ID.",
    "workers": ("num_processes : int, optional\n    Worker processes.\n"
                "progress : bool, optional\n    Show progress bars."),
}


def fill_docstring(doc: str) -> str:
    """``doc`` with each line ``%(name)s`` replaced by the indented ``PARAMETERS[name]``.

    Examples
    --------
    >>> print(fill_docstring("Parameters\\n    ----------\\n    %(overwrite)s\\n"))
    Parameters
        ----------
        overwrite : bool, optional
            Replace an existing dataset with the target's ID.
    <BLANKLINE>
    """
    lines = []
    for line in doc.split("\n"):
        key = line.strip()
        if key.startswith("%(") and key.endswith(")s"):
            indent = line[:len(line) - len(line.lstrip())]
            lines.extend(indent + part for part in PARAMETERS[key[2:-2]].split("\n"))
        else:
            lines.append(line)
    return "\n".join(lines)


def fill_doc(func: F) -> F:
    """Decorator: fill the ``%(name)s`` lines of ``func``'s docstring (see :func:`fill_docstring`)."""
    if func.__doc__:
        func.__doc__ = fill_docstring(func.__doc__)
    return func
