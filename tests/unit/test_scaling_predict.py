"""Predictions for target budgets from both approaches, with intervals (Hoffmann et al. 2022, eq. 4)."""

from __future__ import annotations

import pytest

from raylm.errors import UserError
from raylm.json_safe import json_safe
from raylm.scaling.fit.approach2 import fit_approach2
from raylm.scaling.fit.approach3 import fit_approach3, start_grid
from raylm.scaling.fit_all import fit_scaling_laws
from raylm.scaling.laws import BESIROGLU_2024
from raylm.scaling.predict.approaches import checked_budgets, parse_budgets, predict
from raylm.scaling.predict.pointfit import FitOptions
from raylm.scaling.synthetic import synthetic_isoflop

BUDGETS = (1e18, 1e19, 1e20, 1e21, 1e22)


@pytest.fixture(scope="module")
def data():
    return synthetic_isoflop(BESIROGLU_2024, BUDGETS, per_budget=7, spread=8.0, noise=0.004, seed=4)


def test_predictions_of_both_approaches_with_intervals(data):
    a3 = fit_approach3(data, starts=start_grid("coarse")[::3], bootstrap=100, seed=0)
    a2 = fit_approach2(data, bootstrap=100, seed=0)
    preds = predict([1e23, 1e24], a3, a2)
    assert [(p.approach, p.budget) for p in preds] == [
        ("approach3", 1e23), ("approach3", 1e24), ("approach2", 1e23), ("approach2", 1e24)]
    for p in preds:
        assert 6 * p.n_opt * p.d_opt == pytest.approx(p.budget, rel=1e-9)
        assert p.n_opt == pytest.approx(BESIROGLU_2024.optimal_params(p.budget), rel=0.35)
        for key in ("n_opt", "d_opt"):
            lo, hi = getattr(p, f"{key}_interval")
            assert lo <= getattr(p, key) <= hi
        assert p.loss == pytest.approx(BESIROGLU_2024.optimal_loss(p.budget), rel=0.02)
    lo, hi = preds[0].loss_interval
    assert lo <= preds[0].loss <= hi
    assert predict([], a3, a2) == []


def test_parse_budgets_accepts_lists_and_commas():
    assert parse_budgets(["1e21,3e21", "5.76e23", 2e22]) == [1e21, 3e21, 5.76e23, 2e22]
    with pytest.raises(UserError, match="not a number"):
        parse_budgets(["1e21,lots"])
    with pytest.raises(UserError, match="positive"):
        parse_budgets(["-1e21"])
    # past the edge, numbers: a comma list is not split again
    assert checked_budgets(1e21) == [1e21] and checked_budgets([1e21, 3.0e21]) == [1e21, 3e21]
    with pytest.raises(UserError, match="not a number"):
        checked_budgets(["1e21,3e21"])


def test_report_combines_everything_and_is_json_safe(data):
    report = fit_scaling_laws(data, targets=[1e23], fit=FitOptions(starts="coarse"))
    out = report.as_dict()
    assert out["n_points"] == len(data)
    assert {"E", "A", "B", "alpha", "beta", "objective", "a", "b"} <= set(out["approach3"])
    assert "a" in out["approach2"] and len(out["predictions"]) == 2
    assert json_safe({"x": float("nan"), "y": [float("inf"), 1.0]}) == {"x": None, "y": [None, 1.0]}
