"""Every loss predictor as an array program over rows: S data sets in, S predictions per target out.

One code path serves the point estimate (one row: the measured losses), the backtest (one row of a
subset) and the parametric bootstrap (S simulated rows, :mod:`raylm.scaling.intervals.simulated`). Predictors:

- ``approach3``: the Chinchilla law L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, section 3.3),
  its optimum N*, D*, L* in closed form (their eq. 4); rows are refit by the batched Newton method
  from the full-data optima (:mod:`raylm.scaling.fit.approach3`).
- ``approach2``: IsoFLOP parabolas of the loss in ln N, their interior minima, N* = k_N C^a by least
  squares in log-log space (section 3.2), D* = C / (6 N*); its loss is the Approach 3 law of the same
  row at that allocation (Approach 2 has no loss law of its own).
- ``frontier_gamma``: the frontier L*(C) = E + (C0/C)^gamma through the per-budget minima with its exponent
  pinned to the reference law's, gamma = alpha beta / (alpha + beta) = 0.178 of Epoch's refit of the
  Chinchilla data (Besiroglu et al. 2024; Hoffmann et al. 2022, eq. 4), E and C0 fitted
  (:func:`~raylm.scaling.fit.frontier.fit_frontier_rows_pinned_exponent`). A few budgets determine a
  floor or an exponent badly, never both well; the exponents of compute-optimal loss vary far less
  between studies than the floors do, so the exponent is the one taken from outside. N*, D* as the
  frontier's.
- ``frontier``: per-budget minimum losses (the parabola minimum where it is interior to the sizes,
  else the lowest measured loss of the budget, an upper bound) fitted by L*(C) = E + (C0/C)^gamma
  (:mod:`raylm.scaling.fit.frontier`, Kaplan et al. 2020 with a floor); E pinned to the same row's
  Approach 3 E by default. N*, D* from Approach 2's power law where the row has one, else Approach 3's.
- ``frontier_free``: the same frontier with E fitted too (4+ budgets with interior minima); skipped
  when the main frontier's floor is already free.
- ``power_law``: the frontier with E = 0, L*(C) = (C0/C)^gamma (Kaplan et al. 2020, eq. 1.4).
- ``approach1``: the envelope of training curves (:mod:`raylm.scaling.fit.approach1`, section 3.1).

Frontier minima come only from budgets whose parabola minimum is interior to the sizes trained: a
budget whose best run is its smallest or largest model has not measured its minimum (its lowest
loss is an upper bound, often far off at the edge of a ladder).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from raylm.scaling.data import ScalingData
from raylm.scaling.fit.approach1 import EnvelopeGrid, approach1_rows
from raylm.scaling.fit.approach2 import MIN_RUNS_PER_BUDGET, group_budgets
from raylm.scaling.fit.batched_newton import minimize_batched
from raylm.scaling.fit.frontier import (
    MIN_BUDGETS_FREE_FLOOR,
    MIN_BUDGETS_PINNED_EXPONENT,
    MIN_BUDGETS_PINNED_FLOOR,
    fit_frontier_rows,
    fit_frontier_rows_pinned_exponent,
    frontier_rows_predict,
)
from raylm.scaling.fit.objective import _BLOCK_ELEMENTS, LogData, objective_grad_hess
from raylm.scaling.laws import BESIROGLU_2024, FLOPS_PER_PARAM_TOKEN

#: Every predictor, in the order that breaks ties in the backtest.
APPROACHES = ("frontier_gamma", "frontier", "approach3", "approach2", "frontier_free", "power_law", "approach1")
#: The frontier exponent ``frontier_gamma`` pins: alpha beta / (alpha + beta) of Epoch's Chinchilla refit.
REFERENCE_EXPONENT = BESIROGLU_2024.frontier_exponent


@dataclass(frozen=True)
class Layout:
    """What stays fixed across rows: sizes, tokens, budget groups, the curves' grid, the floor rule."""

    log_n: np.ndarray
    log_d: np.ndarray
    labels: np.ndarray  # budget index per run, -1 for none
    budgets: np.ndarray  # (K,) the budgets with 3+ distinct sizes
    floor: str | float | None = "approach3"  # frontier floor: "approach3", a fixed E, or None (fitted)
    grid: EnvelopeGrid | None = field(default=None, repr=False)

    @classmethod
    def build(cls, data: ScalingData, *, isoflop_budgets=None, tolerance: float = 0.15, floor="approach3",
              grid: EnvelopeGrid | None = None) -> Layout:
        labels, budgets = group_budgets(data.flops, isoflop_budgets, tolerance)
        keep = [k for k in range(len(budgets)) if np.unique(data.params[labels == k]).size >= MIN_RUNS_PER_BUDGET]
        relabel = np.full(len(budgets) + 1, -1)
        relabel[keep] = np.arange(len(keep))
        return cls(np.log(data.params), np.log(data.tokens), relabel[labels], budgets[keep], floor, grid)

    @property
    def logs(self) -> LogData:
        return LogData(self.log_n, self.log_d, np.zeros_like(self.log_n))


@dataclass(frozen=True)
class Estimates:
    """One predictor's N*, D*, L* for S rows and T targets (nan where a row could not predict)."""

    n_opt: np.ndarray
    d_opt: np.ndarray
    loss: np.ndarray


def law_rows(theta: np.ndarray, targets) -> Estimates:
    """Closed-form optimum of each row's law (a, b, e, alpha, beta) (Hoffmann et al. 2022, eq. 4)."""
    c = np.asarray(targets, dtype=float)[None, :]
    log_a, log_b, log_e, alpha, beta = (theta[:, k : k + 1] for k in range(5))
    with np.errstate(all="ignore"):
        valid = (alpha > 0) & (beta > 0)
        log_g = (np.log(alpha) + log_a - np.log(beta) - log_b) / (alpha + beta)
        n_opt = np.exp(log_g + beta / (alpha + beta) * np.log(c / FLOPS_PER_PARAM_TOKEN))
        d_opt = c / FLOPS_PER_PARAM_TOKEN / n_opt
        loss = law_loss(theta, n_opt, d_opt)
    return Estimates(*(np.where(valid, arr, np.nan) for arr in (n_opt, d_opt, loss)))


def law_loss(theta: np.ndarray, n, d) -> np.ndarray:
    """L(N, D) = E + A/N^alpha + B/D^beta per row of theta (S, 5) at N, D of shape (S, T)."""
    log_a, log_b, log_e, alpha, beta = (theta[:, k : k + 1] for k in range(5))
    with np.errstate(all="ignore"):
        return np.exp(log_e) + np.exp(log_a - alpha * np.log(n)) + np.exp(log_b - beta * np.log(d))


def refit_law_rows(layout: Layout, losses: np.ndarray, warm: np.ndarray, delta: float,
                   max_iter: int = 200) -> np.ndarray:
    """Approach 3 refit of every row of ``losses`` (S, n) from each warm start (k, 5); best per row (S, 5)."""
    s, k, n = losses.shape[0], warm.shape[0], layout.log_n.size
    log_y = np.repeat(np.log(losses), k, axis=0)  # problem r * k + j: row r from start j
    chunk = max(1, _BLOCK_ELEMENTS // n)  # objective_grad_hess evaluates this many rows as one block

    def evaluate(theta, rows):
        parts = []
        for lo in range(0, rows.size, chunk):
            sel = rows[lo : lo + chunk]
            data = LogData(layout.log_n, layout.log_d, log_y[sel])  # (m, n) targets: one per problem
            parts.append(objective_grad_hess(theta[lo : lo + chunk], data, delta))
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))

    result = minimize_batched(evaluate, np.tile(warm, (s, 1)), max_iter=max_iter)
    fun = np.where(np.isfinite(result.fun), result.fun, np.inf).reshape(s, k)
    pick = np.argmin(fun, axis=1)
    theta = result.x.reshape(s, k, -1)[np.arange(s), pick]
    return np.where(np.isfinite(fun[np.arange(s), pick])[:, None], theta, np.nan)


def isoflop_rows(layout: Layout, losses: np.ndarray):
    """Per budget and row: parabola minimum (ln N*, L*), whether it is interior, and the lowest loss.

    The parabola of loss in ln N is least squares through the budget's runs (Hoffmann et al. 2022,
    section 3.2), solved for all rows at once; shapes (S, K).
    """
    s, kb = losses.shape[0], layout.budgets.size
    ln_opt, l_opt, best = (np.full((s, kb), np.nan) for _ in range(3))
    interior = np.zeros((s, kb), dtype=bool)
    for k in range(kb):
        idx = np.flatnonzero(layout.labels == k)
        l_opt[:, k], ln_opt[:, k], interior[:, k] = parabola_minima(layout.log_n[idx], losses[:, idx])
        best[:, k] = losses[:, idx].min(axis=1)
    return ln_opt, l_opt, interior, best


def parabola_minima(x: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares parabola of each row of ``losses`` (S, m) in ``x`` (m,) (Hoffmann et al. 2022, section 3.2):
    its minimum value (S,), the x there (S,), and whether it is convex with that x inside the data (S,)."""
    design = np.stack([x * x, x, np.ones_like(x)], axis=1)
    coef = losses @ np.linalg.pinv(design).T  # (S, 3): c2, c1, c0
    with np.errstate(all="ignore"):
        x_opt = -coef[:, 1] / (2 * coef[:, 0])
        vertex = coef[:, 2] - coef[:, 1] ** 2 / (4 * coef[:, 0])
    return vertex, x_opt, (coef[:, 0] > 0) & (x_opt >= x.min()) & (x_opt <= x.max())


def isoflop_residuals(layout: Layout, loss: np.ndarray) -> tuple[np.ndarray, int]:
    """Residuals of ln L from each budget's parabola (budgets with 4+ runs) and their dof, sum (m_k - 3)."""
    resid, dof = [], 0
    for k in range(layout.budgets.size):
        idx = np.flatnonzero(layout.labels == k)
        if idx.size <= 3:
            continue
        x, y = layout.log_n[idx], loss[idx]
        fitted = np.polyval(np.polyfit(x, y, 2), x)
        resid.append(np.log(y / fitted) if np.all(fitted > 0) else np.full(idx.size, np.nan))
        dof += idx.size - 3
    return (np.concatenate(resid) if resid else np.zeros(0)), dof


def approach2_rows(layout: Layout, ln_opt, interior, theta, targets) -> Estimates:
    """N* = k_N C^a through the interior minima of each row (2+ budgets), D* = C/(6N*), loss from the law."""
    x = np.log(layout.budgets)[None, :]
    w = interior.astype(float)
    y = np.where(interior, ln_opt, 0.0)
    sw, sx, sy = w.sum(1), (w * x).sum(1), (w * y).sum(1)
    with np.errstate(all="ignore"):
        det = sw * (w * x * x).sum(1) - sx * sx
        a = (sw * (w * x * y).sum(1) - sx * sy) / det
        intercept = (sy - a * sx) / sw
    ok = (sw >= 2) & (det > 0)
    lc = np.log(np.asarray(targets, dtype=float))[None, :]
    n_opt = np.where(ok[:, None], np.exp(intercept[:, None] + a[:, None] * lc), np.nan)
    d_opt = np.exp(lc) / (FLOPS_PER_PARAM_TOKEN * n_opt)
    return Estimates(n_opt, d_opt, law_loss(theta, n_opt, d_opt))


def frontier_minima(l_opt, interior, best) -> np.ndarray:
    """Each budget's minimum loss: the parabola minimum where interior, else nan (not measured)."""
    return np.where(interior, l_opt, np.nan)


def frontier_floor(layout: Layout, theta: np.ndarray) -> np.ndarray | None:
    """E per row: the row's Approach 3 E, a fixed number, or None (fitted)."""
    if layout.floor is None:
        return None
    if isinstance(layout.floor, str):
        return np.exp(theta[:, 2])
    return np.full(theta.shape[0], float(layout.floor))


def frontier_rows(layout: Layout, minima, floor, allocation: Estimates, targets) -> Estimates:
    """L*(C) = E + (C0/C)^gamma through the per-budget minima of each row, at ``targets``; ``floor`` (S,) or None."""
    e, log_c0, gamma = fit_frontier_rows(np.log(layout.budgets), minima, floor)
    loss = frontier_rows_predict(e, log_c0, gamma, targets)
    return Estimates(allocation.n_opt, allocation.d_opt, loss)


def estimate_rows(layout: Layout, losses: np.ndarray, theta: np.ndarray, targets,
                  curve_factors: np.ndarray | None = None) -> dict[str, Estimates]:
    """Every predictor the layout supports, for each row of ``losses`` (S, n) with its law ``theta`` (S, 5)."""
    out = {"approach3": law_rows(theta, targets)}
    ln_opt, l_opt, interior, best = isoflop_rows(layout, losses)
    a2 = approach2_rows(layout, ln_opt, interior, theta, targets)
    out["approach2"] = a2
    minima = frontier_minima(l_opt, interior, best)
    a3 = out["approach3"]
    use_a2 = np.isfinite(a2.n_opt)
    allocation = Estimates(np.where(use_a2, a2.n_opt, a3.n_opt), np.where(use_a2, a2.d_opt, a3.d_opt), a3.loss)
    measured = interior.sum(axis=1).max(initial=0)
    need = MIN_BUDGETS_FREE_FLOOR if layout.floor is None else MIN_BUDGETS_PINNED_FLOOR
    if measured >= MIN_BUDGETS_PINNED_EXPONENT:
        e, log_c0, gamma = fit_frontier_rows_pinned_exponent(np.log(layout.budgets), minima, REFERENCE_EXPONENT)
        out["frontier_gamma"] = Estimates(allocation.n_opt, allocation.d_opt,
                                          frontier_rows_predict(e, log_c0, gamma, targets))
    if measured >= need:
        out["frontier"] = frontier_rows(layout, minima, frontier_floor(layout, theta), allocation, targets)
    if layout.floor is not None and measured >= MIN_BUDGETS_FREE_FLOOR:
        out["frontier_free"] = frontier_rows(layout, minima, None, allocation, targets)
    zero_floor = layout.floor is not None and not isinstance(layout.floor, str) and float(layout.floor) == 0.0
    if not zero_floor and measured >= MIN_BUDGETS_PINNED_FLOOR:
        out["power_law"] = frontier_rows(layout, minima, np.zeros(losses.shape[0]), allocation, targets)
    if layout.grid is not None:
        factors = np.ones((losses.shape[0], layout.grid.params.size)) if curve_factors is None else curve_factors
        floor = frontier_floor(layout, theta)
        out["approach1"] = Estimates(*approach1_rows(layout.grid, factors, floor, targets))
    return out
