"""The study parent run's headline metrics: the prediction, its interval, the fits and what widened the interval."""

from __future__ import annotations

import pytest

from raylm.study.analysis import headline_metrics

TOP = {"loss": 3.1, "n_opt": 7e4, "d_opt": 3.5e6, "loss_interval": [3.0, 3.25]}


def test_headline_metrics_carry_the_prediction_the_fits_and_the_law_misfit():
    fit = {"fits": {"approach3": {"E": 1.8, "alpha": 0.34, "beta": 0.37}, "frontier": {"E": 1.8, "gamma": 0.1}},
           "choice": {"weights": {"frontier": 0.7, "approach3": 0.3}}, "law_misfit": 0.012,
           "predictions": {"frontier": [{"loss": 3.1}]}, "minima_admit": {"low": [2.9], "high": [3.4]}}
    metrics = headline_metrics(fit, [TOP], [])
    assert metrics["predicted/loss"] == 3.1 and metrics["predicted/tokens_per_param"] == pytest.approx(50.0)
    assert metrics["fit/alpha"] == 0.34 and metrics["fit/frontier_gamma"] == 0.1
    assert metrics["recommended/weight_frontier"] == 0.7
    assert metrics["fit/law_misfit"] == 0.012
    assert metrics["predicted/minima_admit_low"] == 2.9 and metrics["predicted/minima_admit_high"] == 3.4
    assert "verify/loss" not in metrics  # no verification run


def test_a_law_misfit_that_could_not_be_measured_is_left_out():
    for misfit in (None, float("nan")):  # 5 runs or fewer: no degree of freedom
        assert "fit/law_misfit" not in headline_metrics({"law_misfit": misfit}, [TOP], [])
