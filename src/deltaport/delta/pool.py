"""Worker processes of the builder: started by a fork server, never forked from the caller.

The hub builds patches in threads; ``fork`` from a multi-threaded process copies locks
held by other threads (the child can hang on them) and every open file. A fork server
is a clean single-threaded process started once; workers fork from it, import the
job's module and get their inputs by pickle, so jobs carry paths and offsets, never
open files. ``spawn`` would do too, at the price of a fresh interpreter per worker.

As with ``spawn``, each worker imports the caller's ``__main__`` module (not as
``__main__``): a script that builds with ``workers > 1`` must keep its top-level work
under ``if __name__ == "__main__":`` (the CLI, the hub and bench/ do).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

START_METHOD = "forkserver"
_PRELOAD = ["deltaport.delta.encode", "deltaport.delta.sections"]  # what every worker imports


def _context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context(START_METHOD)
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def pool_map(fn: Callable[[T], R], jobs: list[T], workers: int, *,
             chunksize: int = 1) -> list[R]:
    """FN over JOBS in WORKERS processes, results in job order (in-process if workers < 2)."""
    if workers < 2 or len(jobs) < 2:
        return [fn(job) for job in jobs]
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=_context()) as pool:
        return list(pool.map(fn, jobs, chunksize=chunksize))


def pool_imap(fn: Callable[[T], R], jobs: Iterable[T], workers: int) -> Iterator[R]:
    """FN over JOBS in order, at most WORKERS in flight: inputs are made as results leave.

    For jobs whose inputs are big (bytes read by the caller): the caller's iterator is
    consumed only as fast as results come back, so memory stays at ``workers`` jobs.
    """
    if workers < 2:
        yield from (fn(job) for job in jobs)
        return
    with ProcessPoolExecutor(workers, mp_context=_context()) as pool:
        pending: list[Future[R]] = []
        for job in jobs:
            pending.append(pool.submit(fn, job))
            if len(pending) >= workers:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()
