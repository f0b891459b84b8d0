"""The sweep's results table, CSV, plots and UI links."""

from __future__ import annotations

import csv

from raylm.tracking.links import run_link, runs_link
from raylm.tune.results import TrialRow, format_table, plot_best_curves, plot_metric_vs_lr, ranked, write_csv

ROWS = [
    TrialRow("a_00000", {"optim.name": "adamw", "train.lr": 1e-3}, 4.1, 4.0, 100, "FINISHED", "r0",
             [(20, 5.0), (100, 4.0)]),
    TrialRow("a_00001", {"optim.name": "adamw", "train.lr": 1e-2}, 3.5, 3.5, 100, "FINISHED", "r1",
             [(20, 4.5), (100, 3.5)]),
    TrialRow("a_00002", {"optim.name": "sgd", "train.lr": 1e-1}, 6.0, 6.0, 20, "KILLED", "r2", [(20, 6.0)]),
    TrialRow("a_00003", {"optim.name": "sgd", "train.lr": 1.0}, None, None, 0, "FAILED", None, []),
]


def test_ranked_best_first_failed_last():
    assert [r.trial_id for r in ranked(ROWS)] == ["a_00001", "a_00000", "a_00002", "a_00003"]
    assert [r.trial_id for r in ranked(ROWS, "max")][:1] == ["a_00002"]


def test_csv_and_table(tmp_path):
    write_csv(ranked(ROWS), tmp_path / "r.csv", "val/loss")
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert rows[0]["train.lr"] == "0.01" and rows[0]["best_val/loss"] == "3.5" and rows[2]["status"] == "KILLED"
    assert rows[3]["best_val/loss"] == ""
    table = format_table(ranked(ROWS), "val/loss")
    assert "stopped early" in table and table.splitlines()[1].startswith("1 ")


def test_plots_are_written(tmp_path):
    assert plot_metric_vs_lr(ROWS, tmp_path / "lr.png", "val/loss")
    assert plot_best_curves(ROWS, tmp_path / "curves.png", "val/loss")
    assert (tmp_path / "lr.png").stat().st_size > 5000 and (tmp_path / "curves.png").stat().st_size > 5000
    assert not plot_metric_vs_lr([TrialRow("x", {"train.seed": 1}, 1.0, 1.0, 1, "FINISHED")], tmp_path / "n.png",
                                 "val/loss")


def test_links_open_the_runs_view():
    link = runs_link("sqlite:////tmp/m.db", "3", "abc")
    assert link.startswith("http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning")
    assert "searchFilter=tags.mlflow.parentRunId%20%3D%20%27abc%27" in link
    assert runs_link("http://10.0.0.5:5000/", "1").startswith("http://10.0.0.5:5000/#/experiments/1/runs?")
    assert run_link("http://h:5000", "1", "r").endswith("/runs/r?workflowType=machine_learning")
