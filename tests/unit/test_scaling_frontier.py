"""The compute frontier L*(C) = E + (C0/C)^gamma (Kaplan et al. 2020 with a floor) and training curves."""

from __future__ import annotations

import numpy as np
import pytest

from raylm.errors import UserError
from raylm.scaling.curves import CurveData
from raylm.scaling.fit.frontier import (
    FrontierUnavailable,
    fit_frontier,
    fit_frontier_pinned_exponent,
    fit_frontier_rows,
    fit_frontier_rows_pinned_exponent,
    frontier_rows_predict,
)
from raylm.scaling.laws import BESIROGLU_2024

BUDGETS = np.array([1e18, 3e18, 1e19, 3e19, 1e20])


def test_pinned_floor_recovers_the_law_exactly():
    truth = dict(E=1.9, C0=3e19, gamma=0.13)
    minima = truth["E"] + (truth["C0"] / BUDGETS[:3]) ** truth["gamma"]
    law = fit_frontier(BUDGETS[:3], minima, floor=1.9)
    assert (law.E, law.floor) == (1.9, "pinned")
    assert law.C0 == pytest.approx(3e19, rel=1e-9) and law.gamma == pytest.approx(0.13, rel=1e-9)
    assert law(1e21) == pytest.approx(1.9 + (3e19 / 1e21) ** 0.13, rel=1e-12)


def test_free_floor_is_profiled_with_four_or_more_budgets():
    minima = 1.9 + (3e19 / BUDGETS) ** 0.13
    law = fit_frontier(BUDGETS, minima)
    assert law.floor == "fitted"
    assert law.E == pytest.approx(1.9, abs=2e-3) and law.gamma == pytest.approx(0.13, rel=0.02)
    assert law(1e21) == pytest.approx(1.9 + (3e19 / 1e21) ** 0.13, rel=1e-4)


def test_pinned_exponent_recovers_floor_and_scale_from_two_budgets():
    minima = 1.9 + (3e19 / BUDGETS) ** 0.13
    e, log_c0, gamma = fit_frontier_rows_pinned_exponent(np.log(BUDGETS[:2]), minima[None, :2], 0.13)
    assert e[0] == pytest.approx(1.9, rel=1e-9) and np.exp(log_c0[0]) == pytest.approx(3e19, rel=1e-6)
    assert gamma[0] == 0.13
    assert frontier_rows_predict(e, log_c0, gamma, [1e21])[0, 0] == pytest.approx(1.9 + (3e19 / 1e21) ** 0.13)


def test_pinned_exponent_per_row_and_where_it_is_undetermined():
    minima = np.vstack([2.0 + (1e19 / BUDGETS) ** 0.2,  # exact at gamma 0.2
                        np.r_[3.0, np.full(4, np.nan)],  # one budget measured: undetermined
                        0.5 * (1e19 / BUDGETS) ** 0.4])  # steeper than the pinned 0.1 allows: a negative floor
    e, _, gamma = fit_frontier_rows_pinned_exponent(np.log(BUDGETS), minima, np.array([0.2, 0.2, 0.1]))
    assert e[0] == pytest.approx(2.0, rel=1e-9) and gamma[0] == 0.2
    assert np.isnan(e[1:]).all() and np.isnan(gamma[1:]).all()


def test_one_frontier_with_a_pinned_exponent_or_the_reason_it_has_none():
    minima = 1.9 + (3e19 / BUDGETS) ** 0.13
    law = fit_frontier_pinned_exponent(BUDGETS[:3], minima[:3], 0.13)
    assert (law.floor, law.exponent, law.gamma) == ("fitted", "pinned", 0.13)
    assert law.E == pytest.approx(1.9, rel=1e-9) and law(1e21) == pytest.approx(1.9 + (3e19 / 1e21) ** 0.13)
    assert law.as_dict()["exponent"] == "pinned"
    with pytest.raises(FrontierUnavailable, match="needs 2\\+ budgets, got 1"):
        fit_frontier_pinned_exponent(BUDGETS[:1], minima[:1], 0.13)
    with pytest.raises(FrontierUnavailable, match="no floor E >= 0"):
        fit_frontier_pinned_exponent(BUDGETS, 0.5 * (1e19 / BUDGETS) ** 0.4, 0.1)


def test_the_reference_exponent_is_the_chinchilla_refit_optimum_exponent():
    """alpha beta / (alpha + beta) of Besiroglu et al. (2024): 0.3478 * 0.3658 / 0.7136."""
    from raylm.scaling.predict.predictors import APPROACHES, REFERENCE_EXPONENT

    assert REFERENCE_EXPONENT == pytest.approx(0.17829, abs=1e-5) == BESIROGLU_2024.frontier_exponent
    assert APPROACHES[0] == "frontier_gamma"


def test_the_chinchilla_optimum_is_a_frontier():
    """L(N*(C), D*(C)) = E + K C^(-alpha beta / (alpha + beta)) (Hoffmann et al. 2022, eq. 4)."""
    law = BESIROGLU_2024
    frontier = fit_frontier(BUDGETS, law.optimal_loss(BUDGETS), floor=law.E)
    assert frontier.gamma == pytest.approx(law.alpha * law.beta / (law.alpha + law.beta), rel=1e-9)
    assert frontier(1e23) == pytest.approx(law.optimal_loss(1e23), rel=1e-9)


@pytest.mark.parametrize(
    ("budgets", "minima", "floor", "message"),
    [
        (BUDGETS[:1], [3.0], 1.0, "needs 2\\+ budgets"),
        (BUDGETS[:3], [3.0, 2.9, 2.8], None, "free floor E needs 4\\+ budgets, got 3; pin E"),
        (BUDGETS[:3], [3.0, 2.9, 2.8], 2.85, "not below every budget's minimum"),
        (BUDGETS[:3], [2.8, 2.9, 3.0], 1.0, "do not decrease"),
    ],
)
def test_undetermined_frontiers_say_why(budgets, minima, floor, message):
    with pytest.raises(FrontierUnavailable, match=message):
        fit_frontier(budgets, minima, floor)


def test_rows_match_single_fits_and_mark_bad_rows_nan():
    rng = np.random.default_rng(0)
    rows = (1.8 + (3e19 / BUDGETS[:3]) ** 0.12)[None, :] * np.exp(0.005 * rng.standard_normal((6, 3)))
    rows[5] = [2.0, 2.1, 2.2]  # increasing: no frontier
    e, log_c0, gamma = fit_frontier_rows(np.log(BUDGETS[:3]), rows, np.full(6, 1.8))
    pred = frontier_rows_predict(e, log_c0, gamma, [1e20])
    for i in range(5):
        assert pred[i, 0] == pytest.approx(fit_frontier(BUDGETS[:3], rows[i], 1.8)(1e20), rel=1e-12)
    assert np.isnan(gamma[5]) and np.isnan(pred[5, 0])


def test_curve_data_validates_and_sorts():
    curves = CurveData.from_records([
        {"run": "b", "params": 2e6, "tokens": 2e8, "loss": 3.1},
        {"run": "a", "params": 1e6, "tokens": 1e8, "loss": 3.5},
        {"run": "b", "params": 2e6, "tokens": 1e8, "loss": 3.4},
    ])
    assert curves.runs == ["b", "a"] and len(curves) == 3
    n, tokens, loss = curves.curve("b")
    assert n == 2e6 and tokens.tolist() == [1e8, 2e8] and loss.tolist() == [3.4, 3.1]
    assert curves.final_flops() == {"b": pytest.approx(6 * 2e6 * 2e8), "a": pytest.approx(6e14)}
    assert curves.subset_runs(["a"]).runs == ["a"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ((["a", "a"], [1e6, 2e6], [1e8, 2e8], [3.0, 2.9]), "2 different parameter counts"),
        ((["a", "a"], [1e6, 1e6], [1e8, -1], [3.0, 2.9]), "'tokens' must be positive"),
        ((["a"], [1e6, 1e6], [1e8, 2e8], [3.0, 2.9]), "different lengths"),
        (([], [], [], []), "no curve points"),
    ],
)
def test_bad_curves_are_user_errors(columns, message):
    with pytest.raises(UserError, match=message):
        CurveData.from_arrays(*columns)


def test_curve_records_need_every_key():
    with pytest.raises(UserError, match="lack key"):
        CurveData.from_records([{"run": "a", "params": 1.0, "tokens": 2.0}])
