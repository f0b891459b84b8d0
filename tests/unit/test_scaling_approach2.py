"""Approach 2 (Hoffmann et al. 2022, section 3.2): IsoFLOP parabolas and power laws N* ~ C^a, D* ~ C^b."""

from __future__ import annotations

import numpy as np
import pytest

from raylm.scaling.data import ScalingData
from raylm.scaling.fit.approach2 import Approach2Unavailable, fit_approach2, fit_power_law, group_budgets
from raylm.scaling.laws import BESIROGLU_2024, ChinchillaLaw
from raylm.scaling.synthetic import synthetic_isoflop

BUDGETS = (1e18, 1e19, 1e20, 1e21, 1e22)


def test_recovers_the_exponents_of_a_known_law():
    data = synthetic_isoflop(BESIROGLU_2024, BUDGETS, per_budget=9, spread=8.0, noise=0.0)
    fit = fit_approach2(data)
    assert all(s.used for s in fit.slices) and len(fit.slices) == len(BUDGETS)
    assert fit.a == pytest.approx(BESIROGLU_2024.a, abs=0.01)
    assert fit.a + fit.b == pytest.approx(1.0)
    for s in fit.slices:  # parabola minima sit at the law's optimum (up to the parabola approximation)
        assert s.n_opt == pytest.approx(BESIROGLU_2024.optimal_params(s.budget), rel=0.05)
        assert s.d_opt == pytest.approx(s.budget / (6 * s.n_opt))
    assert fit.n_opt_law(1e24) == pytest.approx(BESIROGLU_2024.optimal_params(1e24), rel=0.1)


def test_noisy_exponents_with_intervals_and_bootstrap():
    data = synthetic_isoflop(BESIROGLU_2024, BUDGETS, per_budget=9, spread=8.0, noise=0.003, seed=2)
    fit = fit_approach2(data, bootstrap=200, seed=1, level=0.9)
    lo, hi = fit.n_opt_law.exponent_interval(0.9)
    assert lo < fit.a < hi and lo < BESIROGLU_2024.a < hi
    out = fit.as_dict()
    boot_lo, boot_hi = out["bootstrap"]["intervals"]["a"]
    assert boot_lo < fit.a < boot_hi
    assert out["bootstrap"]["resamples_ok"] > 150
    again = fit_approach2(data, bootstrap=200, seed=1, level=0.9)
    np.testing.assert_array_equal(fit.bootstrap_samples, again.bootstrap_samples)
    n_boot, d_boot = fit.bootstrap_predictions([1e23, 1e24])
    assert n_boot.shape == d_boot.shape == (fit.bootstrap_samples.shape[0], 2)


def test_power_law_fit_is_exact_on_a_power_law():
    c = np.array([1e18, 1e19, 1e20, 1e21])
    law = fit_power_law(c, 3.0 * c**0.5)
    assert law.exponent == pytest.approx(0.5) and np.exp(law.intercept) == pytest.approx(3.0)
    assert law.stderr_exponent == pytest.approx(0.0, abs=1e-10)
    assert np.isnan(fit_power_law(c[:2], c[:2] ** 0.5).stderr_exponent)  # two points: no dof


def test_grouping_runs_into_budgets():
    flops = np.array([1.0e20, 1.05e20, 0.97e20, 3.0e20, 3.1e20, 1e21])
    labels, budgets = group_budgets(flops)
    assert labels.tolist() == [0, 0, 0, 1, 1, 2] and budgets.size == 3
    assert budgets[0] == pytest.approx(np.exp(np.log(flops[:3]).mean()))
    labels, budgets = group_budgets(flops, budgets=[1e20, 3e20], tolerance=0.1)
    assert labels.tolist() == [0, 0, 0, 1, 1, -1]
    np.testing.assert_allclose(budgets, [1e20, 3e20])


def test_budgets_without_a_usable_profile_are_skipped_with_a_reason():
    law = ChinchillaLaw(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.36)
    good = synthetic_isoflop(law, (1e19, 1e20), per_budget=5, noise=0.0)
    n_opt = law.optimal_params(1e21)
    few = (np.array([n_opt, 2 * n_opt]), 1e21)  # two sizes only
    off = (n_opt * np.array([8.0, 16.0, 32.0]), 1e22 * 1.0)  # all far right of the optimum: minimum outside
    params = np.concatenate([good.params, few[0], off[0]])
    flops = np.concatenate([good.flops, np.full(2, few[1]), np.full(3, off[1])])
    tokens = flops / (6 * params)
    data = ScalingData.from_arrays(params, tokens, law.loss(params, tokens), flops)
    fit = fit_approach2(data)
    notes = {round(np.log10(s.budget)): s.note for s in fit.slices}
    assert notes[19] == notes[20] == ""
    assert "2 distinct" in notes[21]
    assert fit.slices[-1].note and not fit.slices[-1].used
    with pytest.raises(Approach2Unavailable, match="at least 2 budgets"):
        fit_approach2(data.subset(np.isin(data.flops, [1e19, 1e21])))
