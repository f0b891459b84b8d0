"""Run a function over row blocks of a batch on a few threads (numpy releases the GIL in its loops).

Blocks write disjoint slices of preallocated outputs, so the result does not depend on scheduling.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

THREADS = max(1, min(4, os.cpu_count() or 1))
_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own


def run_blocks(fn: Callable[[slice], None], n_rows: int, rows_per_block: int) -> None:
    """Call ``fn(rows)`` for consecutive slices of ``rows_per_block`` rows covering ``range(n_rows)``."""
    blocks = [slice(lo, lo + rows_per_block) for lo in range(0, n_rows, max(1, rows_per_block))]
    if THREADS > 1 and len(blocks) > 1:
        list(_pool().map(fn, blocks))
    else:
        for rows in blocks:
            fn(rows)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="raylm-scaling"))
    return _POOL[1]
