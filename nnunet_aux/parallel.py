"""Work on many cases at once: one process pool for every conversion and the evaluation.

Ctrl-C goes to the whole process group, workers included. The workers are started with
SIGINT ignored, so only this process sees it (as :class:`KeyboardInterrupt`): it stops the
workers (SIGTERM; they hold no semaphore of their own, so none leaks), waits for them and
lets the exception go on (the command then removes its staging folder, prints one line and
exits 130). No worker prints a traceback and no worker outlives the command.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import signal
import threading
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm


@contextlib.contextmanager
def _interrupts_ignored_by_children() -> Iterator[None]:
    """SIGINT ignored while worker processes start, so that they inherit "ignore" from birth
    (a Python started with SIGINT ignored keeps it so); this process's handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_setup() -> None:
    """Workers ignore SIGINT (the parent handles Ctrl-C) and create no semaphore of their own:
    ``Pool.terminate`` kills them (SIGTERM), and a semaphore a killed process created (tqdm's
    write lock is one, made by the first progress bar) is reported by the resource tracker as
    leaked. Progress bars in a worker therefore share a thread lock."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tqdm.set_lock(threading.RLock())


def run_parallel(function: Callable[[Any], Any], items: Sequence[Any], num_processes: int = 1,
                 desc: str = "", progress: bool = True) -> list:
    """``[function(item) for item in items]`` in spawned worker processes, with a progress bar.

    ``function`` must be picklable (a module-level function or a ``functools.partial``
    of one). With ``num_processes <= 1`` (or a single item) everything runs here. An
    exception in a worker (or Ctrl-C here) stops the other workers and is raised here.

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
    with _interrupts_ignored_by_children():
        pool = context.Pool(min(num_processes, len(items)), initializer=_worker_setup)
    try:
        indexed = pool.imap_unordered(functools.partial(_indexed_call, function), enumerate(items))
        for index, value in tqdm(indexed, total=len(items), desc=desc, disable=not progress):
            results[index] = value
        pool.close()  # let workers exit cleanly: terminate() leaks the semaphores of a busy worker
        pool.join()
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    return results


def _indexed_call(function: Callable[[Any], Any], item: tuple[int, Any]) -> tuple[int, Any]:
    index, value = item
    return index, function(value)
