"""recommend(): every predictor, the backtest, the recommended prediction and its JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.unit.synthetic_studies import synthetic_curves

from raylm.errors import UserError
from raylm.scaling import ScalingData
from raylm.scaling.backtest.largest_budget import held_out_best
from raylm.scaling.fit.approach2 import fit_approach2
from raylm.scaling.fit.approach3 import fit_approach3
from raylm.scaling.laws import BESIROGLU_2024, tokens_for_budget
from raylm.scaling.predict.pointfit import FitOptions, fit_point
from raylm.scaling.predict.predictors import Layout, refit_law_rows
from raylm.scaling.predict.recommend import IntervalOptions, recommend
from raylm.scaling.synthetic import synthetic_isoflop

NO_SIMULATIONS = IntervalOptions(simulations=0)
pytestmark = pytest.mark.usefixtures("one_blas_thread")
LAW = BESIROGLU_2024
GRID = (1e18, 3e18, 1e19)
TARGETS = [3e19, 1e20]


@pytest.fixture(scope="module")
def study():
    return synthetic_isoflop(LAW, GRID, per_budget=5, spread=64.0, noise=0.007, seed=1)


@pytest.fixture(scope="module")
def result(study):
    return recommend(study, TARGETS, intervals=IntervalOptions(simulations=100, seed=0))


def chinchilla_grid(offsets, noise: float, seed: int, spread: float = 16.0) -> ScalingData:
    """5 sizes per budget of GRID centred on offsets[k] x N*(C) of the Chinchilla law."""
    rng = np.random.default_rng(seed)
    c = np.repeat(GRID, 5)
    n = LAW.optimal_params(c) * np.repeat(offsets, 5) * np.exp(np.tile(np.linspace(-0.5, 0.5, 5), 3) * np.log(spread))
    d = tokens_for_budget(c, n)
    return ScalingData.from_arrays(n, d, LAW.loss(n, d) * np.exp(noise * rng.standard_normal(c.size)), c)


def test_every_predictor_at_every_target_with_intervals(result):
    assert set(result.predictions) == {"frontier_gamma", "frontier", "approach3", "approach2", "power_law"}
    assert result.unavailable["approach1"] == "no training curves given"
    assert "needs 4+" in result.unavailable["frontier_free"]  # 3 budgets: a free floor is not determined
    assert result.approach in result.predictions
    assert [p.loss for p in result.recommended] == pytest.approx([p.loss for p in result.predictions[result.approach]])
    # the law reported for the frontier with a pinned exponent is the one behind its predictions
    law = result.point.frontier_gamma
    assert [p.loss for p in result.predictions["frontier_gamma"]] == pytest.approx(list(law(np.array(TARGETS))))
    truth = LAW.optimal_loss(np.array(TARGETS))
    for name, preds in result.predictions.items():
        if name == "power_law":  # no floor: biased low by construction, checked in test_scaling_frontier
            continue
        assert [p.budget for p in preds] == TARGETS
        for p, true in zip(preds, truth, strict=True):
            assert 6 * p.n_opt * p.d_opt == pytest.approx(p.budget)
            assert p.tokens_per_param == pytest.approx(p.d_opt / p.n_opt)
            assert p.n_opt == pytest.approx(LAW.optimal_params(p.budget), rel=0.5)
            assert p.loss == pytest.approx(true, rel=0.03)
            lo, hi = p.loss_interval
            assert lo < p.loss < hi and p.run_interval[0] < p.loss < p.run_interval[1]
            assert p.run_interval[1] - p.run_interval[0] > 0.9 * (hi - lo)  # one run's noise on top
            assert p.level == 0.9
    widths = [p.loss_interval[1] / p.loss_interval[0] for p in result.predictions["approach3"]]
    assert widths[0] < widths[1]  # extrapolating further is less certain
    assert result.noise.source == "Approach 3 residuals" and result.noise.dof == 10  # 15 runs - 5 parameters
    assert 0.003 < result.noise.sigma < 0.012


def test_what_the_minima_alone_admit_is_reported_and_holds_the_truth(result):
    """Three budgets' minima decide little about 10x beyond: the admitted range holds the law's optimum and is
    wider than the recommended interval, which leans on the pinned exponent and the calibration."""
    admitted = result.admitted
    assert admitted is not None and admitted.budgets == 3 and list(admitted.targets) == TARGETS
    truth = LAW.optimal_loss(np.array(TARGETS))
    assert np.all(np.array(admitted.low) <= truth) and np.all(truth <= np.array(admitted.high))
    for p, low, high in zip(result.recommended, admitted.low, admitted.high, strict=True):
        assert high - low > p.loss_interval[1] - p.loss_interval[0]
    assert result.as_dict()["minima_admit"]["high"] == list(admitted.high)


def test_backtest_holds_out_the_largest_budget(study, result):
    test = result.backtest
    top = study.flops > 5e18
    actual, source = held_out_best(study.params[top], study.loss[top])
    assert test.budget == pytest.approx(1e19) and (test.actual, test.actual_source) == (actual, source)
    assert source == "parabola minimum"
    assert set(test.rel_error) == set(result.predictions)
    for name, err in test.rel_error.items():
        assert err == pytest.approx(test.predicted[name] / actual - 1)
    assert result.approach in test.ranking() and "backtest case" in result.reason
    assert result.choice.cases == 1  # 3 budgets: one cut (2 budgets) predicting the third


def test_as_dict_is_json(result):
    out = json.loads(json.dumps(result.as_dict(), allow_nan=False))
    assert [r["budget"] for r in out["recommended"]] == TARGETS
    rec = out["recommended"][0]
    assert {"approach", "budget", "n_opt", "d_opt", "tokens_per_param", "loss", "loss_interval", "run_interval",
            "level"} <= set(rec)
    assert out["backtest"]["held_out_budget"] == pytest.approx(1e19)
    assert out["fits"]["frontier"]["floor"] == "pinned"
    assert out["fits"]["frontier_gamma"]["exponent"] == "pinned" and out["fits"]["frontier_gamma"]["floor"] == "fitted"
    assert out["fits"]["frontier"]["E"] == pytest.approx(out["fits"]["approach3"]["E"])


def test_same_seed_same_answer(study, result):
    again = recommend(study, TARGETS, intervals=IntervalOptions(simulations=100, seed=0))
    assert again.as_dict() == result.as_dict()


def test_row_programs_match_the_single_fits(study):
    point = fit_point(study, TARGETS, FitOptions())
    a2 = fit_approach2(study)
    np.testing.assert_allclose(point.estimates["approach2"].n_opt[0], a2.n_opt_law(TARGETS), rtol=1e-9)
    a3 = fit_approach3(study, starts="coarse")
    np.testing.assert_allclose(point.estimates["approach3"].loss[0], a3.law.optimal_loss(np.array(TARGETS)),
                               rtol=1e-9)
    layout = Layout.build(study)
    theta = refit_law_rows(layout, study.loss[None, :], a3.local_optima[:2], 1e-3)
    np.testing.assert_allclose(theta[0], a3.theta, rtol=1e-5, atol=1e-7)


def test_two_budgets_no_backtest_first_available_in_order():
    data = synthetic_isoflop(LAW, GRID[:2], per_budget=5, spread=16.0, noise=0.005, seed=2)
    out = recommend(data, 1e20, intervals=NO_SIMULATIONS)
    assert out.backtest.budget is None and "3+" in out.backtest.note
    assert out.approach == "frontier_gamma" and "no backtest" in out.reason
    # no backtest: the interval is the predictors' disagreement and the law's misfit of the runs
    low, high = out.recommended[0].loss_interval
    spread = max(p[0].loss for p in out.predictions.values()) / min(p[0].loss for p in out.predictions.values())
    from raylm.scaling.intervals.calibrated import calibrated_quantile, law_misfit

    misfit = law_misfit(out.point.law_residuals)
    assert 0.001 < misfit < 0.01  # the runs' 0.5% noise around the true law
    u = np.sqrt((misfit * np.log1p(1e20 / GRID[1])) ** 2 + np.log(spread) ** 2)
    assert low < out.recommended[0].loss < high
    assert high / low == pytest.approx(np.exp(2 * calibrated_quantile(0.9) * u))


def test_unavailable_predictors_say_why():
    data = chinchilla_grid([6.0, 6.0, 6.0], noise=0.002, seed=0)  # optimum below every grid: no interior minimum
    out = recommend(data, 1e20, fit=FitOptions(floor=None), intervals=NO_SIMULATIONS)
    assert "approach2" in out.unavailable and "minimum outside" in out.unavailable["approach2"]
    assert "no budget has its minimum inside the sizes trained" in out.unavailable["frontier"]
    assert "0 budget(s) with an interior minimum" in out.unavailable["frontier_gamma"]
    assert out.approach == "approach3" and "no backtest" in out.reason


def test_curves_add_approach1():
    final, curves = synthetic_curves(LAW, GRID, per_budget=5, spread=16.0, noise=0.003, seed=3)
    out = recommend(final, [1e20], curves=curves, intervals=IntervalOptions(simulations=40))
    assert "approach1" in out.predictions and "approach1" in out.backtest.rel_error
    p = out.predictions["approach1"][0]
    assert p.loss == pytest.approx(LAW.optimal_loss(1e20), rel=0.03)
    assert p.loss_interval[0] < p.loss < p.loss_interval[1]


def test_bad_arguments_are_user_errors(study):
    with pytest.raises(UserError, match="target budget"):
        recommend(study, [])
    with pytest.raises(UserError, match="level"):
        recommend(study, [1e20], intervals=IntervalOptions(level=1.5))
    with pytest.raises(UserError, match="run noise"):
        recommend(study, [1e20], intervals=IntervalOptions(noise=-0.1))
    with pytest.raises(UserError, match="floor"):
        recommend(study, [1e20], fit=FitOptions(floor="median"))


def test_stacked_recommendation_on_a_ladder_with_enough_backtest_cases():
    data = synthetic_isoflop(LAW, (1e18, 2e18, 4e18, 8e18, 1.6e19), per_budget=7, spread=16.0, noise=0.003, seed=4)
    out = recommend(data, [5e19], intervals=NO_SIMULATIONS)
    assert out.approach == "stacked" and out.choice.cases >= 3
    assert sum(out.choice.weights.values()) == pytest.approx(1.0)
    rec = out.recommended[0]
    assert out.predictions["stacked"][0] == rec
    parts = {k: out.predictions[k][0].loss for k in out.choice.weights}
    assert rec.loss == pytest.approx(np.exp(sum(w * np.log(parts[k]) for k, w in out.choice.weights.items())))
    assert rec.loss == pytest.approx(LAW.optimal_loss(5e19), rel=0.01)
    low, high = rec.loss_interval
    assert low < rec.loss < high and rec.run_interval == (low, high)  # bootstrap=0: no noise estimate
    errors = out.as_dict()["leave_future_out"]
    assert set(out.choice.weights) <= set(errors) and errors["approach3"]["cases"] >= out.choice.cases
