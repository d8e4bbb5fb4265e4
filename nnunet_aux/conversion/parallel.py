"""Work on many cases at once: one process pool for every conversion."""

from __future__ import annotations

import functools
import multiprocessing
from typing import Any, Callable, Sequence

from tqdm import tqdm


def run_parallel(function: Callable[[Any], Any], items: Sequence[Any], num_processes: int = 1,
                 desc: str = "", progress: bool = True) -> list:
    """``[function(item) for item in items]`` in spawned worker processes, with a progress bar.

    ``function`` must be picklable (a module-level function or a ``functools.partial``
    of one). With ``num_processes <= 1`` (or a single item) everything runs here.

    Examples
    --------
    >>> run_parallel(abs, [-1, 2, -3], progress=False)
    [1, 2, 3]
    """
    items = list(items)
    if num_processes <= 1 or len(items) <= 1:
        return [function(item) for item in tqdm(items, desc=desc, disable=not progress)]
    # spawn: safe with threads (SimpleITK, torch) and the same on every platform.
    context = multiprocessing.get_context("spawn")
    results: list = [None] * len(items)
    with context.Pool(min(num_processes, len(items))) as pool:
        indexed = pool.imap_unordered(functools.partial(_indexed_call, function), enumerate(items))
        for index, value in tqdm(indexed, total=len(items), desc=desc, disable=not progress):
            results[index] = value
        pool.close()  # let workers exit cleanly: terminate() (the with block's exit) leaks their semaphores
        pool.join()
    return results


def _indexed_call(function: Callable[[Any], Any], item: tuple[int, Any]) -> tuple[int, Any]:
    index, value = item
    return index, function(value)
