"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_blas_thread():
    """These fits are many small matrix products: BLAS threads on a shared 2-core machine cost 2x the CPU."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # not a raylm dependency; the tests only run slower without it
        yield
        return
    with threadpool_limits(1):
        yield
