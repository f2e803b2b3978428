"""Worker processes for the light stages (evaluate, statistics, report): their work splits into
independent tasks, and a stage near the end of the DAG often runs alone, so its `threads`
become processes (Python-level work does not share one process's cores).

Workers are spawned (not forked: no inherited locks or threads) with one BLAS/OpenMP thread
each; tasks and results travel between processes in memory only, never through files.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from tqdm.auto import tqdm

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _worker_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@contextmanager
def process_pool(workers: int) -> Iterator[Executor | None]:
    """`workers` spawned worker processes, or None when `workers` <= 1 (run in this process)."""
    if workers <= 1:
        yield None
        return
    saved = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    os.environ.update({var: "1" for var in saved})  # what the spawned workers start with
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_logging,
                                 initargs=(logging.getLogger().getEffectiveLevel(),)) as pool:
            yield pool
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def parallel_map(function: Callable[[Any], Any], tasks: Sequence, workers: int, desc: str, progress: bool) -> list:
    """`function` over `tasks` in order, in `workers` processes; in this process when workers is 1
    or there is one task. `function` must be importable (a module-level function)."""
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress)
    try:
        with process_pool(workers if len(tasks) > 1 else 1) as pool:
            if pool is None:
                results = []
                for task in tasks:
                    results.append(function(task))
                    bar.update()
                return results
            results = []
            for result in pool.map(function, tasks, chunksize=max(1, len(tasks) // (8 * workers))):
                results.append(result)
                bar.update()
            return results
    finally:
        bar.close()
