"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
from tests.unit import blas


@pytest.fixture
def one_blas_thread():
    """These fits are many small matrix products: BLAS threads on a shared 2-core machine cost 2x the CPU."""
    with blas.limit_blas_threads():
        yield
