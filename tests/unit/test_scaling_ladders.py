"""Leave-future-out backtests on ladders: the harness on a synthetic ladder with a known answer, the
ladder CSVs (budget and experiment columns), the stacking rule and the calibrated intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import nnls

from raylm.cli import main
from raylm.errors import UserError
from raylm.scaling import ScalingData
from raylm.scaling.backtest.ladder import (
    RECOMMENDED,
    Case,
    backtest_ladder,
    format_summary,
    hindsight_combination,
    target_noise_of,
)
from raylm.scaling.backtest.leave_future_out import Ladder, Record, budget_best, cut_fits, records_of
from raylm.scaling.intervals.calibrated import (
    calibrated_interval,
    calibrated_quantile,
    calibration_table,
    interval_scale,
    law_misfit,
    weighted_quantile,
)
from raylm.scaling.io import read_csv, read_ladders
from raylm.scaling.laws import BESIROGLU_2024, tokens_for_budget
from raylm.scaling.predict.pointfit import FitOptions
from raylm.scaling.predict.stacking import STACKED, choose, simplex_least_squares

pytestmark = pytest.mark.usefixtures("one_blas_thread")
LADDERS = Path(__file__).resolve().parents[2] / "jobs" / "data" / "ladders"
LAW = BESIROGLU_2024
BUDGETS = (1e18, 2e18, 4e18, 8e18, 1.6e19, 3.2e19)


def exact_ladder(budgets=BUDGETS, sizes=9, spread=16.0) -> ScalingData:
    """Runs on the Chinchilla law itself, no noise, centred on each budget's optimum."""
    c = np.repeat(budgets, sizes)
    n = LAW.optimal_params(c) * np.tile(np.geomspace(1 / np.sqrt(spread), np.sqrt(spread), sizes), len(budgets))
    d = tokens_for_budget(c, n)
    return ScalingData.from_arrays(n, d, LAW.loss(n, d), c)


@pytest.fixture(scope="module")
def exact_backtest():
    data = exact_ladder()
    return backtest_ladder(data, FitOptions(isoflop_budgets=BUDGETS), name="exact")


def test_harness_on_an_exact_law_knows_the_answer(exact_backtest):
    """With no noise, Approach 3 recovers the law: its predictions of later budgets equal the law's optimum."""
    cases = [c for c in exact_backtest.cases if c.record.predictor == "approach3"]
    cuts = sorted({c.record.cut for c in cases})
    assert cuts == pytest.approx(list(BUDGETS[2:-1]))  # 3+ measured budgets fitted, a later one to predict
    for c in cases:
        truth = float(LAW.optimal_loss(c.record.target))
        assert c.record.predicted == pytest.approx(truth, rel=1e-6)
        assert c.record.ratio == pytest.approx(c.record.target / c.record.cut)
        # the measured best is the parabola minimum of the budget's runs, within a parabola's bias of the truth
        assert c.record.actual_source == "parabola minimum" and c.record.actual == pytest.approx(truth, rel=2e-3)
        assert abs(c.record.n_log_ratio) < np.log(1.2)
    summary = exact_backtest.summary()
    assert summary["approach3"]["all"]["cases"] == len(cases) == 3 + 2 + 1
    assert summary[RECOMMENDED]["all"]["max_abs_error"] < 3e-3
    text = format_summary(exact_backtest)
    assert "recommended" in text and "3-10x" in text
    # beside it, the range the minima up to the cut admit; on an exact law it holds the measured best
    rec = [c for c in exact_backtest.cases if c.record.predictor == RECOMMENDED]
    assert all(c.admitted is not None and c.admits() for c in rec)
    assert summary[RECOMMENDED]["all"]["minima_admit_coverage"] == 1.0
    assert "minima up to each cut alone admit" in text.splitlines()[-1]
    out = json.loads(json.dumps(exact_backtest.as_dict()))
    assert out["cases"][0]["rel_error"] == pytest.approx(out["cases"][0]["predicted"] / out["cases"][0]["actual"] - 1)


def test_target_noise_is_the_measured_bests_scatter_around_one_smooth_frontier(exact_backtest):
    """On the exact law the bests lie on a smooth frontier (within the parabola's bias); one budget's runs 2% high
    show up as that budget's scatter, which no predictor of the later budgets could be expected to beat."""
    assert exact_backtest.target_noise.budgets == len(BUDGETS) and exact_backtest.target_noise.max_abs < 2e-3
    data = exact_ladder()
    loss = np.where(np.isclose(data.flops, BUDGETS[3]), data.loss * 1.02, data.loss)
    bumped = Ladder.build(ScalingData.from_arrays(data.params, data.tokens, loss, data.flops),
                          FitOptions(isoflop_budgets=BUDGETS))
    noise = target_noise_of(bumped)
    assert 0.01 < noise.max_abs < 0.02 and noise.rms < noise.max_abs
    few = Ladder.build(exact_ladder(BUDGETS[:3]), FitOptions(isoflop_budgets=BUDGETS[:3]))
    assert target_noise_of(few) is None  # a free floor needs 4 budgets
    assert json.loads(json.dumps(exact_backtest.as_dict()))["target_noise"]["budgets"] == len(BUDGETS)


def test_recommended_learns_only_from_cases_before_the_cut():
    data = exact_ladder()
    options = FitOptions(isoflop_budgets=BUDGETS)
    ladder = Ladder.build(data, options)
    fits = cut_fits(ladder, options, min_measured=2)
    assert [f.index for f in fits] == [1, 2, 3, 4]
    inner = records_of(ladder, [f for f in fits if f.index < 3], upto=3)
    assert inner and max(r.target for r in inner) == pytest.approx(BUDGETS[3])
    assert max(r.cut for r in inner) == pytest.approx(BUDGETS[2])


def test_budget_best_on_the_edge_is_the_lowest_measured_loss():
    n = np.array([1e8, 2e8, 4e8, 8e8])
    best = budget_best(n, np.array([3.0, 3.1, 3.3, 3.6]), 1e19)  # loss rises with size: optimum below the grid
    assert not best.interior and best.source == "lowest measured loss" and (best.loss, best.n_best) == (3.0, 1e8)
    best = budget_best(n, np.array([3.2, 3.0, 3.05, 3.3]), 1e19)
    assert best.interior and 2e8 < best.n_best < 4e8 and best.loss < 3.0


def test_ladder_csvs_group_by_budget_and_split_by_experiment():
    ladders = read_ladders(LADDERS / "llama_3.csv")
    assert set(ladders) == {"llama_3__raw_loss", "llama_3__exp_loss"}
    raw = ladders["llama_3__raw_loss"]
    assert len(raw) == 133 and np.unique(raw.flops).size == 10  # the nominal budgets, not 6ND
    with pytest.raises(UserError, match="holds 2 experiments"):
        read_csv(LADDERS / "llama_3.csv")
    assert len(read_csv(LADDERS / "llama_3.csv", experiment="llama_3__exp_loss")) == 133
    with pytest.raises(UserError, match="no experiment 'nope'"):
        read_csv(LADDERS / "llama_3.csv", experiment="nope")
    chinchilla = read_csv(LADDERS / "chinchilla_ml_scalefit.csv")
    six_nd = 6 * chinchilla.params * chinchilla.tokens
    assert np.max(np.abs(six_nd / chinchilla.flops - 1)) > 0.05  # labels differ from 6ND; grouping uses labels


def test_every_shipped_ladder_has_provenance():
    readme = (LADDERS / "README.md").read_text()
    for path in LADDERS.glob("*.csv"):
        assert f"`{path.name}`" in readme
        for data in read_ladders(path).values():
            assert len(data) > 100


def test_fit_backtest_command_prints_a_table_and_writes_json(tmp_path, capsys):
    csv = tmp_path / "ladder.csv"
    data = exact_ladder(BUDGETS[:5], sizes=7)
    columns = zip(data.params, data.tokens, data.flops, data.loss, strict=True)
    rows = ["experiment,params,tokens,budget,loss"] + [",".join(["exact"] + [repr(float(v)) for v in row])
                                                       for row in columns]
    csv.write_text("\n".join(rows) + "\n")
    args = ["fit", "--csv", str(csv), "--backtest", "--starts", "coarse", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "exact: 5 budgets" in out and "recommended" in out and "coverage" in out
    payload = json.loads((tmp_path / "o" / "backtest.json").read_text())
    ladder = payload["ladders"][0]
    assert ladder["ladder"] == "exact" and ladder["level"] == 0.9
    assert {c["predictor"] for c in ladder["cases"]} >= {"recommended", "approach3", "frontier"}
    assert {"rel_error", "ratio", "covered", "interval_width", "n_log_ratio"} <= set(ladder["cases"][0])


def test_fit_backtest_of_a_ladder_too_short_for_any_cut_says_why_and_exits_2(tmp_path, capsys):
    """Two budgets leave no cut with 3 measured budgets and a later one: a clear error, no empty table file."""
    csv = tmp_path / "short.csv"
    data = exact_ladder(BUDGETS[:2], sizes=7)
    columns = zip(data.params, data.tokens, data.flops, data.loss, strict=True)
    csv.write_text("\n".join(["experiment,params,tokens,budget,loss"]
                             + [",".join(["short"] + [repr(float(v)) for v in row]) for row in columns]) + "\n")
    assert main(["fit", "--csv", str(csv), "--backtest", "--starts", "coarse", "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    assert "no backtest case: a cut needs 3+ budgets" in captured.out
    assert "short has 2 budget(s), 2 with an interior minimum" in captured.err
    assert not (tmp_path / "o" / "backtest.json").exists()


def test_a_ladder_without_cases_says_so_in_its_json(tmp_path):
    result = backtest_ladder(exact_ladder(BUDGETS[:2], sizes=7), FitOptions(isoflop_budgets=BUDGETS[:2]), name="short")
    record = result.as_dict()
    assert record["cases"] == [] and record["measured_budgets"] == 2
    assert "a cut needs 3+ budgets" in record["no_case"]


def _record(predictor, predicted, actual, cut=1e18, target=3e18):
    return Record(cut, 2, 2.0, target, predictor, predicted, actual, "parabola minimum", 1.0, 1.0)


def test_stacking_weights_cancel_opposite_biases():
    actual = [3.0, 2.9, 2.8, 2.7]
    records = []
    for i, a in enumerate(actual):  # one predictor 2% high, the other 2% low at every case
        records += [_record("approach3", a * 1.02, a, cut=1e18 * (i + 1)),
                    _record("power_law", a * 0.98, a, cut=1e18 * (i + 1))]
    choice = choose(records, ["approach3", "power_law", "frontier"])
    assert choice.approach == STACKED and choice.cases == 4
    assert choice.weights["approach3"] == pytest.approx(0.5, abs=0.01)
    assert choice.combine({"approach3": 1.02, "power_law": 0.98}) == pytest.approx(1.0)  # the biases cancel
    assert choice.scale > 0


def test_hindsight_combination_finds_the_fixed_weights_that_cancel_a_known_drift():
    cases = []
    for i, ratio in enumerate([2.0, 4.0, 8.0, 16.0]):  # the law high, the power law low, both growing with ln(ratio)
        a, drift = 3.0 - 0.1 * i, 0.01 * np.log(ratio)
        for name, pred in [("approach3", a * np.exp(drift)), ("power_law", a * np.exp(-3 * drift)),
                           ("frontier_free", a * 1.05)]:
            cases.append(Case(_record(name, pred, a, cut=1e18, target=1e18 * ratio), 0.0, name))
    cases.append(Case(_record(RECOMMENDED, 9.9, 3.0), 0.0, "approach3"))  # never a component
    cases.pop(2)  # frontier_free missing at one case: not a component
    best = hindsight_combination(cases)
    assert best.weights == pytest.approx({"approach3": 0.75, "power_law": 0.25})
    assert best.bucket(3.0, 10.0) == {"cases": 2, "median_abs_error": pytest.approx(0, abs=1e-12),
                                      "max_abs_error": pytest.approx(0, abs=1e-12)}
    assert best.as_dict()["1-3x"]["cases"] == 1 and hindsight_combination([]) is None


def test_too_few_cases_take_the_order_whatever_their_errors():
    choice = choose([_record("approach3", 3.01, 3.0), _record("frontier", 3.05, 3.0)], ["approach3", "frontier"])
    assert choice.approach == "frontier" and choice.weights == {"frontier": 1.0} and "1 backtest case" in choice.reason
    assert choice.errors["approach3"] < choice.errors["frontier"] and choice.scale > 0
    choice = choose([], ["approach3", "frontier"])
    assert choice.approach == "frontier" and "no backtest" in choice.reason and np.isnan(choice.scale)
    assert choose([], []).approach is None


def test_simplex_least_squares_matches_a_penalised_nnls():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.normal(size=(12, 4))
        y = x @ rng.dirichlet(np.ones(4)) + rng.normal(scale=0.3, size=12)
        w = simplex_least_squares(x, y)
        assert np.all(w >= -1e-12) and w.sum() == pytest.approx(1.0)
        ref, _ = nnls(np.vstack([x, 1e4 * np.ones(4)]), np.concatenate([y, [1e4]]))
        ref = ref / ref.sum()
        assert np.sum((x @ w - y) ** 2) <= np.sum((x @ ref - y) ** 2) + 1e-6


def test_calibrated_intervals_grow_with_ratio_and_disagreement():
    u = interval_scale([3.0, 10.0, 30.0], [0.0, 0.0, 0.0], 0.01)
    assert np.all(np.diff(u) > 0)
    assert interval_scale(3.0, 0.02, 0.01) > interval_scale(3.0, 0.0, 0.01)
    # a law that misses its own runs by m widens the interval in proportion to ln(1 + r), like s does
    assert interval_scale(3.0, 0.0, 0.0, 0.01) == pytest.approx(interval_scale(3.0, 0.0, 0.01))
    expected = np.sqrt((0.01 ** 2 + 0.02 ** 2) * np.log(4.0) ** 2 + 0.02 ** 2)
    assert interval_scale(3.0, 0.02, 0.01, 0.02) == pytest.approx(expected)
    assert interval_scale(3.0, 0.02, 0.01, float("nan")) == interval_scale(3.0, 0.02, 0.01)
    low, high = calibrated_interval(np.array([2.0, 2.0]), np.array([3.0, 3.0]), np.array([0.0, 0.01]), float("nan"),
                                    0.9)
    assert np.isnan(low[0]) and low[1] < 2.0 < high[1]  # nothing to calibrate on: no interval
    assert calibrated_quantile(0.5) < calibrated_quantile(0.9) < calibrated_quantile(0.95)
    with pytest.raises(UserError, match="levels"):
        calibrated_quantile(0.999)


def test_law_misfit_is_the_residual_rms_over_n_minus_5_degrees_of_freedom():
    residuals = np.array([0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01])
    assert law_misfit(residuals) == pytest.approx(np.sqrt(np.sum(residuals ** 2) / 2))
    assert np.isnan(law_misfit(residuals[:5]))  # no degree of freedom left
    assert np.isnan(law_misfit([np.nan] * 8))


def test_weighted_quantile_weighs_every_ladder_the_same():
    scores = np.concatenate([np.full(90, 1.0), np.full(10, 5.0)])
    groups = np.array(["big"] * 90 + ["small"] * 10)
    assert weighted_quantile(scores, groups, 0.4) == 1.0 and weighted_quantile(scores, groups, 0.6) == 5.0
    table = calibration_table(scores, groups, [0.5, 0.9])
    assert table == {"levels": [0.5, 0.9], "quantiles": [1.0, 5.0]}
