"""One BLAS thread for the scaling fits: many small matrix products, for which BLAS threads on a shared 2-core
machine cost twice the CPU."""

from __future__ import annotations

import contextlib


def limit_blas_threads():
    """Limit BLAS to one thread now; the returned context manager restores it on exit. threadpoolctl is not a
    raylm dependency: without it, nothing is limited and the fits only run slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    import numpy  # noqa: F401  the limit reaches only the BLAS libraries loaded when it is set: numpy's and
    import scipy.linalg  # noqa: F401  scipy's own OpenBLAS, which the fits' nnls and least squares use
    return threadpool_limits(1)
