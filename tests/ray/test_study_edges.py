"""Edge extension end to end on the local Ray: a tiny grid centred on 0.25 tokens per parameter (every model far
too big for its budget, so the best run is a budget's smallest model) gets smaller sizes trained beyond that edge
before the fits, and the fits, fit.json, the summary and the parent run say which budgets were extended."""

from __future__ import annotations

import json

import pytest

from raylm.study.config import load_study
from raylm.study.edges import EDGES_TAG
from raylm.study.run import run_study
from raylm.study.summary import outcome_summary
from tests.ray.study_helpers import write_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_minimum_at_the_edge_gets_sizes_beyond_it_trained_and_fitted(tmp_path, ray_local):
    from mlflow.tracking import MlflowClient

    study = load_study(write_study(tmp_path, name="edges", prior={"tokens_per_param": 0.25}, verify={"enabled": False},
                                   budgets=[2.0e8, 4.0e8], targets=[1.2e9],  # 2 budgets x 3 sizes: enough to fit
                                   edges={"extend": True, "max_points_per_budget": 1}, fit={"simulations": 10}))
    outcome = run_study(study, log=print)
    report = outcome.edges
    assert report.extended, "with 0.25 tokens per parameter some budget's best run is its smallest model"
    added = [r for b in report.extended for r in b.added]
    for b in report.extended:
        (point,) = b.added  # one size per budget (max_points_per_budget: 1)
        grid = [r for r in outcome.results if r.point.grid.budget == b.budget and r not in b.added]
        assert len(grid) == 3 and b.first.side == "small"
        assert point.point.grid.params < min(r.point.grid.params for r in grid)  # beyond the smallest
        assert point.status == "FINISHED" and point.loss is not None and point.point.label.endswith("-edge")
    assert len(outcome.results) == 6 + len(added) and outcome.verify == []
    # trained beside the grid, as soon as their budget was done: the rounds after it found them in the record
    assert all(r.reused for r in added)
    fitted = outcome.recommendation.point.data  # the data every predictor was fitted to
    pairs = set(zip(fitted.params.tolist(), fitted.tokens.tolist(), strict=True))
    assert all((r.point.grid.params, r.point.grid.tokens) in pairs for r in added)
    fit = json.loads((outcome.directory / "fit.json").read_text())
    assert fit["edges"]["extended"] == [b.budget for b in report.extended]
    assert [a["label"] for e in fit["edges"]["budgets"] for a in e["added"]] == [r.point.label for r in added]
    summary = outcome_summary(outcome)
    assert f"edges: {len(report.extended)} budget(s) extended" in summary
    assert all(b.line() in summary for b in report.budgets)
    parent = MlflowClient(outcome.tracking_uri).get_run(outcome.parent_run_id)
    assert parent.data.tags[EDGES_TAG] == report.tag() and parent.data.tags[EDGES_TAG].startswith("extended ")
    assert "**Edges:**" in parent.data.tags["mlflow.note.content"]
    children = MlflowClient(outcome.tracking_uri).search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'")
    assert sorted(c.data.tags["raylm.point"] for c in children) == sorted(r.point.label for r in outcome.results)
