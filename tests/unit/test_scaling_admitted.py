"""The range the IsoFLOP minima alone admit at a bigger budget (profile likelihood of the frontier)."""

from __future__ import annotations

import numpy as np
import pytest

from raylm.scaling.fit.admitted import admitted_range

E, C0, GAMMA = 1.8, 3e12, 0.18
BUDGETS = np.geomspace(1e18, 1e20, 6)
TARGETS = np.array([1e21, 1e22])


def frontier(c):
    return E + (C0 / np.asarray(c, dtype=float)) ** GAMMA


def test_the_range_holds_the_truth_and_narrows_with_the_noise():
    truth = frontier(TARGETS)
    widths = []
    for sigma in (1e-2, 1e-3, 1e-4):
        r = admitted_range(BUDGETS, frontier(BUDGETS), TARGETS, sigma)
        assert np.all(np.array(r.low) <= truth) and np.all(truth <= np.array(r.high))
        assert r.floors[0] <= E <= r.floors[1] + 1e-3
        widths.append(np.array(r.high) - np.array(r.low))
    assert np.all(widths[0] > widths[1]) and np.all(widths[1] > widths[2])
    assert np.all(widths[0][0] < widths[0][1])  # further out, less is decided


def test_fewer_budgets_admit_more():
    few = admitted_range(BUDGETS[:3], frontier(BUDGETS[:3]), TARGETS, 1e-3)
    many = admitted_range(BUDGETS, frontier(BUDGETS), TARGETS, 1e-3)
    assert np.all(np.array(few.high) - np.array(few.low) > np.array(many.high) - np.array(many.low))
    two = admitted_range(BUDGETS[:2], frontier(BUDGETS[:2]), TARGETS, 1e-3)
    assert two.floors[0] == 0.0 and two.floors[1] == pytest.approx(frontier(BUDGETS[1]), rel=1e-3)  # any floor


def test_noisy_minima_still_covered_and_json_ready():
    rng = np.random.default_rng(0)
    sigma = 0.003
    losses = frontier(BUDGETS) * np.exp(sigma * rng.standard_normal(BUDGETS.size))
    r = admitted_range(BUDGETS, losses, TARGETS, sigma)
    assert np.all(np.array(r.low) <= frontier(TARGETS)) and np.all(frontier(TARGETS) <= np.array(r.high))
    assert np.all(np.array(r.high) <= losses.min())  # a decreasing frontier never rises above the lowest minimum
    d = r.as_dict()
    assert d["budgets"] == 6 and d["sigma"] == sigma and len(d["low"]) == 2 and "profile likelihood" in d["method"]


@pytest.mark.parametrize("budgets, losses, sigma", [
    (BUDGETS[:1], frontier(BUDGETS[:1]), 1e-3),  # one budget
    (BUDGETS, frontier(BUDGETS), 0.0),  # no noise to bound with
    (BUDGETS, frontier(BUDGETS), float("nan")),
    (BUDGETS, frontier(BUDGETS)[::-1], 1e-3),  # loss rising with compute: no decreasing frontier
])
def test_nothing_admitted_without_a_decreasing_frontier_or_a_noise(budgets, losses, sigma):
    assert admitted_range(budgets, losses, TARGETS, sigma) is None
