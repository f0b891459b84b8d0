"""The residual standard deviation over degrees of freedom shared by the noise estimate and the law's misfit."""

from __future__ import annotations

import math

import numpy as np

from raylm.scaling.residuals import residual_sigma


def test_residual_sigma_is_the_root_of_the_sum_of_squares_over_the_degrees_of_freedom():
    assert math.isclose(residual_sigma([0.03, -0.04], 1), 0.05)
    assert math.isclose(residual_sigma(np.full(8, 0.01), 2), 0.02)


def test_residual_sigma_is_nan_without_a_degree_of_freedom_or_with_a_residual_not_finite():
    assert math.isnan(residual_sigma([0.01, 0.02], 0))
    assert math.isnan(residual_sigma([0.01, float("nan"), 0.02], 2))
    assert math.isnan(residual_sigma([0.01, float("inf"), 0.02], 2))
