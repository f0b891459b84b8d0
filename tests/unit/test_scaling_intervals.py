"""The pieces of the prediction intervals: noise estimates, simulation, pivots, the backtest check."""

from __future__ import annotations

import numpy as np
import pytest

from raylm.errors import UserError
from raylm.scaling.intervals.simulated import (
    NoiseEstimate,
    backtest_scale,
    estimate_noise,
    pivot_interval,
    simulate,
)


def test_noise_from_isoflop_residuals_then_the_law_then_given():
    rng = np.random.default_rng(0)
    law_resid, iso_resid = 0.02 * rng.standard_normal(15), 0.01 * rng.standard_normal(6)
    iso = estimate_noise(law_resid, (iso_resid, 6))
    assert (iso.source, iso.dof) == ("IsoFLOP parabola residuals", 6)
    assert iso.sigma == pytest.approx(np.sqrt(iso_resid @ iso_resid / 6))
    law = estimate_noise(law_resid, (iso_resid[:1], 1))  # too few degrees of freedom in the parabolas
    assert (law.source, law.dof) == ("Approach 3 residuals", 10)
    assert estimate_noise(law_resid, None, noise=0.004) == NoiseEstimate(0.004, None, "given")
    with pytest.raises(UserError, match="cannot estimate"):
        estimate_noise(np.zeros(5))
    with pytest.raises(UserError, match="positive"):
        estimate_noise(law_resid, noise=0.0)


def test_sigma_draws_follow_the_scaled_inverse_chi_square():
    rng = np.random.default_rng(1)
    draws = NoiseEstimate(0.01, 6, "x").draw(rng, 200_000)
    assert np.mean(draws**2) == pytest.approx(0.01**2 * 6 / 4, rel=0.02)  # E[dof s^2 / chi2_dof] = s^2 dof/(dof-2)
    assert np.all(NoiseEstimate(0.01, None, "given").draw(rng, 3) == 0.01)
    losses, factors, sigma = simulate(np.log(np.full(4, 3.0)), NoiseEstimate(0.01, None, "given"), 5000, rng, 2)
    assert losses.shape == (5000, 4) and factors.shape == (5000, 2)
    assert np.std(np.log(losses)) == pytest.approx(0.01, rel=0.03)


def test_pivot_interval_reflects_the_simulated_errors():
    rng = np.random.default_rng(2)
    errors = np.exp(0.02 + 0.01 * rng.standard_normal((4000, 1)))  # refits 2% high, 1% spread
    piv = pivot_interval(np.array([3.0]), 2.0 * errors, np.array([2.0]), np.full(4000, 0.01), 0.9, rng)
    low, high = piv.loss[0][0], piv.loss[1][0]
    assert low == pytest.approx(3.0 * np.exp(-0.02 - 1.645 * 0.01), rel=2e-3)
    assert high == pytest.approx(3.0 * np.exp(-0.02 + 1.645 * 0.01), rel=2e-3)
    assert piv.run[0][0] < low and piv.run[1][0] > high and piv.refits[0] == 4000
    wide = pivot_interval(np.array([3.0]), 2.0 * errors, np.array([2.0]), np.full(4000, 0.01), 0.9, rng, scale=2.0)
    assert np.log(wide.loss[1][0] / wide.loss[0][0]) == pytest.approx(2 * np.log(high / low), rel=0.02)
    few = pivot_interval(np.array([3.0]), 2.0 * errors[:5], np.array([2.0]), np.full(5, 0.01), 0.9, rng)
    assert np.isnan(few.loss[0][0])


def test_backtest_scale_widens_only_beyond_the_simulated_range():
    sims = np.random.default_rng(3).standard_normal(10_000) * 0.01
    assert backtest_scale(0.015, sims, 0.9) == 1.0
    assert backtest_scale(0.0329, sims, 0.9) == pytest.approx(2.0, rel=0.03)
    assert backtest_scale(-0.0329, sims, 0.9) == pytest.approx(2.0, rel=0.03)
    assert backtest_scale(0.015, sims) == pytest.approx(1.5, rel=0.03)  # default: beyond one standard deviation
    assert backtest_scale(0.005, sims) == 1.0
    assert backtest_scale(0.05, sims[:3]) == 1.0  # too few simulations to judge
