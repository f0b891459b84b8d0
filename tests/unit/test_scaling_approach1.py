"""Approach 1: the envelope of training curves (Hoffmann et al. 2022, section 3.1)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.unit.synthetic_studies import synthetic_curves

from raylm.scaling.curves import CurveData
from raylm.scaling.fit.approach1 import Approach1Unavailable, approach1_rows, envelope_grid, fit_approach1
from raylm.scaling.laws import BESIROGLU_2024

LAW = BESIROGLU_2024


@pytest.fixture(scope="module")
def clean():
    return synthetic_curves(LAW, (1e18, 3e18, 1e19), per_budget=9, spread=16.0, noise=0.0, points=20, seed=0)


def test_noise_free_curves_recover_the_allocation_and_the_loss(clean):
    final, curves = clean
    assert len(final) == 27 and len(curves) == 27 * 20
    fit = fit_approach1(curves, floor=LAW.E)
    assert fit.a == pytest.approx(LAW.a, abs=0.01) and fit.b == pytest.approx(1 - fit.a)
    assert fit.n_opt(1e20) == pytest.approx(LAW.optimal_params(1e20), rel=0.05)
    assert 6 * fit.n_opt(1e20) * fit.d_opt(1e20) == pytest.approx(1e20)
    assert fit.loss_law.floor == "pinned"
    assert fit.loss_law(1e20) == pytest.approx(LAW.optimal_loss(1e20), rel=1e-3)
    out = fit.as_dict()
    assert out["runs"] == 27 and out["loss_flops"][0] == pytest.approx(1e18, rel=0.02)


def test_the_envelope_is_the_lowest_curve_at_every_compute(clean):
    _, curves = clean
    grid = envelope_grid(curves, points=64)
    loss, arg = grid.envelope()
    finite = np.isfinite(grid.loss)
    assert np.all(loss[0][grid.covered] <= np.where(finite, grid.loss, np.inf)[grid.covered].min(axis=1) + 1e-15)
    assert np.all(finite[np.arange(64), arg[0]])  # the run achieving it reaches that compute
    # scaling one run's curve down makes it the envelope wherever it is covered
    factors = np.ones((1, grid.params.size))
    factors[0, 3] = 0.5
    _, arg2 = grid.envelope(factors)
    assert np.all(arg2[0][finite[:, 3]] == 3)


def test_rows_reproduce_the_fit(clean):
    _, curves = clean
    fit = fit_approach1(curves, floor=LAW.E)
    n_opt, d_opt, loss = approach1_rows(fit.grid, np.ones((2, fit.grid.params.size)), np.full(2, LAW.E), [1e20])
    assert n_opt[1, 0] == pytest.approx(float(fit.n_opt(1e20)), rel=1e-9)
    assert loss[0, 0] == pytest.approx(float(fit.loss_law(1e20)), rel=1e-9)


def test_a_free_floor_and_an_impossible_one(clean):
    _, curves = clean
    assert fit_approach1(curves).loss_law.floor == "fitted"
    fit = fit_approach1(curves, floor=10.0)
    assert fit.loss_law is None and "floor E = 10" in fit.loss_note


def test_unresolved_envelopes_are_unavailable():
    one = CurveData.from_arrays(["a"] * 3, [1e6] * 3, [1e8, 2e8, 3e8], [3.0, 2.9, 2.8])
    with pytest.raises(Approach1Unavailable, match="2\\+ runs"):
        fit_approach1(one)
    # the small model is better everywhere: N*(C) does not change
    three = CurveData.from_arrays(["a"] * 3 + ["b"] * 3 + ["c"] * 3, [1e6] * 3 + [2e6] * 3 + [4e6] * 3,
                                  [1e8, 4e8, 1.6e9, 0.5e8, 2e8, 4e8, 0.25e8, 1e8, 4e8],
                                  [3.0, 2.8, 2.6, 3.5, 3.3, 3.2, 3.6, 3.4, 3.3])
    with pytest.raises(Approach1Unavailable, match="does not resolve"):
        fit_approach1(three)
