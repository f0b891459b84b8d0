"""CSV input and the ``raylm fit`` command: JSON out, plots written, exit status 2 on bad input."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from tests.conftest import REPO_ROOT, run_cli

from raylm.cli import main
from raylm.errors import UserError
from raylm.scaling.io import read_csv, write_csv
from raylm.scaling.laws import BESIROGLU_2024
from raylm.scaling.synthetic import synthetic_isoflop

EXAMPLE = REPO_ROOT / "jobs" / "data" / "synthetic_isoflop.csv"


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    data = synthetic_isoflop(BESIROGLU_2024, (1e18, 1e19, 1e20, 1e21), per_budget=6, spread=8.0, noise=0.004, seed=5)
    return write_csv(data, tmp_path_factory.mktemp("fit") / "runs.csv")


def test_csv_round_trip_and_tokens_from_flops(small_csv, tmp_path):
    data = read_csv(small_csv)
    assert len(data) == 24
    path = tmp_path / "flops_only.csv"
    rows = zip(data.loss, data.flops, data.params, strict=True)
    path.write_text("loss,flops,params\n" + "".join(f"{loss},{c},{n}\n" for loss, c, n in rows))
    again = read_csv(path)
    np.testing.assert_allclose(again.tokens, data.tokens, rtol=1e-12)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("params,loss\n1,2\n", "missing column"),
        ("params,tokens,loss\n1e8,1e9,nan\n", "finite"),
        ("params,tokens,loss\n1e8,1e9,abc\n", "not a number"),
        ("params,tokens,loss\n1e8,-1e9,3\n", "must be positive"),
        ("params,tokens,loss\n1e8,1e9,3\n1e8,,3\n", "empty value"),
        ("params,tokens,loss\n" + "1e8,1e9,3\n" * 3, "3 point"),
        ("", "empty"),
    ],
)
def test_bad_csv_is_a_user_error(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_csv(path)


def test_fit_command_prints_json_and_writes_plots(small_csv, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["fit", "--csv", str(small_csv), "--starts", "coarse", "--bootstrap", "30", "--seed", "1",
                 "--budget", "1e22,1e23", "--budget", "5.76e23", "--out", str(out)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    fit = result["approach3"]
    assert {"E", "A", "B", "alpha", "beta", "objective", "a", "b", "intervals", "stderr"} <= set(fit)
    assert fit["n_starts"] == 243 and fit["bootstrap"]["resamples"] == 30
    assert [p["budget"] for p in result["predictions"] if p["approach"] == "approach3"] == [1e22, 1e23, 5.76e23]
    for name in ("isoflops.png", "optimal_allocation.png", "loss_contours.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "fit.json").read_text())["approach3"]["E"] == fit["E"]


def test_fit_command_exits_2_with_a_clear_message(tmp_path):
    bad = tmp_path / "runs.csv"
    bad.write_text("params,tokens\n1e8,1e9\n")
    result = run_cli("fit", "--csv", str(bad))
    assert result.returncode == 2
    assert "missing column(s) loss" in result.stderr and "Traceback" not in result.stderr


def test_fit_command_rejects_bad_budgets(small_csv, capsys):
    assert main(["fit", "--csv", str(small_csv), "--starts", "coarse", "--budget", "big"]) == 2
    assert "not a number" in capsys.readouterr().err


def test_shipped_example_is_what_its_script_makes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_example", EXAMPLE.with_name("make_synthetic_isoflop.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh, shipped = read_csv(module.main(tmp_path / "x.csv")), read_csv(EXAMPLE)
    for column in ("params", "tokens", "loss", "flops"):
        np.testing.assert_allclose(getattr(fresh, column), getattr(shipped, column), rtol=1e-12)


def test_fit_command_prints_the_recommended_prediction(capsys):
    code = main(["fit", "--csv", str(EXAMPLE), "--starts", "coarse", "--simulations", "60", "--level", "0.9",
                 "--budget", "1e22,3e22"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    recommended = result["recommended"]
    assert [r["budget"] for r in recommended] == [1e22, 3e22]
    for r in recommended:
        assert {"approach", "budget", "n_opt", "d_opt", "loss", "loss_interval", "level"} <= set(r)
        assert r["approach"] == result["recommendation"]["approach"] and r["level"] == 0.9
        low, high = r["loss_interval"]
        assert low < r["loss"] < high
        assert r["loss"] == pytest.approx(float(BESIROGLU_2024.optimal_loss(r["budget"])), rel=0.02)
        assert 6 * r["n_opt"] * r["d_opt"] == pytest.approx(r["budget"])
        admit_low, admit_high = r["minima_admit"]  # what the IsoFLOP minima alone admit there
        assert admit_low < admit_high
    assert result["recommendation"]["minima_admit"]["targets"] == [1e22, 3e22]
    backtest = result["backtest"]
    assert backtest["held_out_budget"] == pytest.approx(3e21) and backtest["actual_source"] == "parabola minimum"
    assert recommended[0]["approach"] in backtest["ranking"] + ["stacked"]
    assert "backtest" in result["recommendation"]["reason"]


def test_fit_command_without_budgets_recommends_nothing(small_csv, capsys):
    assert main(["fit", "--csv", str(small_csv), "--starts", "coarse"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["recommended"] == [] and "backtest" not in result
