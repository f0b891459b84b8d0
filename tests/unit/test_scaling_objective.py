"""The Approach 3 objective: Huber on the log residual, summed; its exact gradient and Hessian."""

from __future__ import annotations

import numpy as np
import pytest

from raylm.scaling.fit.batched_newton import minimize_batched
from raylm.scaling.fit.objective import (
    LogData,
    huber,
    log_predict,
    objective,
    objective_and_grad,
    objective_grad_hess,
)
from raylm.scaling.laws import BESIROGLU_2024
from raylm.scaling.synthetic import synthetic_isoflop

DELTA = 1e-3


@pytest.fixture(scope="module")
def logs() -> LogData:
    return synthetic_isoflop(BESIROGLU_2024, [1e19, 1e20, 1e21], per_budget=8, noise=0.01, seed=3).log


def thetas(rng, count=6):
    """Points near the optimum (mixed inside/outside delta) and far away (all outside)."""
    near = BESIROGLU_2024.log_params + rng.normal(0, [0.05, 0.05, 0.01, 0.003, 0.003], size=(count, 5))
    far = rng.uniform([0, 0, -1, 0, 0], [25, 25, 1, 2, 2], size=(count, 5))
    return np.vstack([near, far])


def test_huber_matches_its_definition():
    r = np.array([-0.5, -DELTA, -1e-4, 0.0, 3e-4, DELTA, 2.0])
    expected = np.where(np.abs(r) <= DELTA, 0.5 * r**2, DELTA * (np.abs(r) - 0.5 * DELTA))
    np.testing.assert_allclose(huber(r, DELTA), expected, rtol=1e-15, atol=0)


def test_objective_is_the_sum_of_huber_of_log_residuals(logs):
    theta = BESIROGLU_2024.log_params
    a, b, e, alpha, beta = theta
    naive = np.log(np.exp(a - alpha * logs.log_n) + np.exp(b - beta * logs.log_d) + np.exp(e))
    assert objective(theta, logs, DELTA) == pytest.approx(huber(logs.log_loss - naive, DELTA).sum(), rel=1e-12)
    doubled = LogData(*(np.tile(v, 2) for v in (logs.log_n, logs.log_d, logs.log_loss)))
    assert objective(theta, doubled, DELTA) == pytest.approx(2 * objective(theta, logs, DELTA), rel=1e-12)


def test_weights_equal_repeated_points(logs):
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 3, logs.size).astype(float)
    idx = np.repeat(np.arange(logs.size), counts.astype(int))
    repeated = LogData(logs.log_n[idx], logs.log_d[idx], logs.log_loss[idx])
    for theta in thetas(rng, 2):
        f_w, g_w, h_w = objective_grad_hess(theta, logs, DELTA, counts)
        f_r, g_r, h_r = objective_grad_hess(theta, repeated, DELTA)
        assert f_w == pytest.approx(f_r, rel=1e-12)
        np.testing.assert_allclose(g_w, g_r, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(h_w, h_r, rtol=1e-10, atol=1e-12)


def test_analytic_gradient_matches_finite_differences(logs):
    rng = np.random.default_rng(1)
    for theta in thetas(rng):
        _, grad = objective_and_grad(theta, logs, DELTA)
        eps = 1e-6 * np.maximum(1.0, np.abs(theta))
        step = eps[:, None] * np.eye(5)
        fd = np.array([objective(theta + step[i], logs, DELTA) - objective(theta - step[i], logs, DELTA)
                       for i in range(5)]) / (2 * eps)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-9 * max(1.0, np.abs(fd).max()))


def test_analytic_hessian_matches_finite_differences_of_the_gradient(logs):
    rng = np.random.default_rng(2)
    smooth = [t for t in thetas(rng, 6) if np.min(np.abs(np.abs(_residual(t, logs)) - DELTA)) > 1e-4]
    assert len(smooth) >= 6
    for theta in smooth:  # the Huber second derivative jumps at |r| = delta: keep points away from it
        _, _, hess = objective_grad_hess(theta, logs, DELTA)
        eps = 1e-7
        fd = np.array([
            (objective_and_grad(theta + eps * np.eye(5)[i], logs, DELTA)[1]
             - objective_and_grad(theta - eps * np.eye(5)[i], logs, DELTA)[1]) / (2 * eps) for i in range(5)
        ])
        np.testing.assert_allclose(hess, hess.T, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(hess, fd, rtol=1e-4, atol=1e-6 * np.abs(fd).max())


def _residual(theta, logs):
    return logs.log_loss - log_predict(theta, logs.log_n, logs.log_d)


def test_batched_evaluation_matches_one_by_one(logs):
    batch = thetas(np.random.default_rng(4))
    f, g, h = objective_grad_hess(batch, logs, DELTA)
    for i, theta in enumerate(batch):
        f1, g1, h1 = objective_grad_hess(theta, logs, DELTA)
        assert f[i] == pytest.approx(f1, rel=1e-14)
        np.testing.assert_allclose(g[i], g1, rtol=1e-13)


def test_log_sum_exp_is_stable_for_extreme_parameters(logs):
    extreme = np.array([[900.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -800.0, -50.0, 60.0], [5.0, 5.0, 700.0, 1.0, 1.0]])
    pred = log_predict(extreme, logs.log_n, logs.log_d)
    assert np.all(np.isfinite(pred))
    np.testing.assert_allclose(pred[0], 900.0)
    np.testing.assert_allclose(pred[1], np.maximum(50.0 * logs.log_n, -60.0 * logs.log_d), rtol=1e-12)
    np.testing.assert_allclose(pred[2], 700.0)
    f, g, h = objective_grad_hess(extreme, logs, DELTA)
    assert np.all(np.isfinite(f)) and np.all(np.isfinite(g)) and np.all(np.isfinite(h))


def test_batched_newton_solves_many_problems_at_once():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(50, 3))
    scales = np.array([1.0, 1e2, 1e-2])  # badly scaled, and a quartic term so the Hessian varies

    def evaluate(x, rows):
        d = x - centres[rows]
        f = np.sum(scales * d**2 + d**4, axis=1)
        g = 2 * scales * d + 4 * d**3
        h = np.zeros((len(rows), 3, 3))
        h[:, np.arange(3), np.arange(3)] = 2 * scales + 12 * d**2
        return f, g, h

    result = minimize_batched(evaluate, centres + rng.normal(scale=3.0, size=centres.shape), max_iter=200)
    assert result.converged.all()
    np.testing.assert_allclose(result.x, centres, atol=1e-5)
