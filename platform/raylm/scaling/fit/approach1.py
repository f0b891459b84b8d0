"""Approach 1: the envelope of all training curves (Hoffmann et al. 2022, section 3.1, Figure 2).

Every curve point of every run is a (compute, loss) pair with C = 6 N D_t. On a log-spaced grid of C,
each run's loss is interpolated linearly in ln C between its points (a run covers C only between its
first and last point); the envelope is the lowest loss over runs at each C, and the run that reaches
it gives N*(C) and D*(C) = C / (6 N*(C)). Power laws N* = k_N C^a and D* = k_D C^b are least-squares
lines in log-log space through the envelope's grid points (so b = 1 - a). Hoffmann et al. used 1,500
grid points and smoothed curves; here ``points`` grid points and the raw curves.

Which envelope points are fitted: the power laws use every grid point covered by at least
``min_runs`` runs (as Hoffmann et al. did: N* is a step function over the runs' sizes, and a short
range of C turns its steps into a wrong slope). The loss uses the covered points from the smallest
compute at which any run *finished* upwards: below it the envelope is made only of the first steps of
runs (warm-up, high learning rate), the part least like a finished run, and furthest from the targets.

Loss at a target: the frontier L*(C) = E + (C0/C)^gamma (:mod:`raylm.scaling.fit.frontier`) fitted to
those envelope points, E pinned by ``floor`` or fitted when None.

Known bias: a point in the middle of a cosine schedule is not the loss a run trained for that many
tokens would reach; its learning rate has not decayed, so its loss is higher (Hoffmann et al. 2022,
Figure A1: a cosine cycle overshooting the run by 25%+ already costs loss). Between the budgets'
final points the envelope is built from such intermediate points: it lies above the true frontier
there, favours runs near their end (smaller models at a given C), and biases N*(C) low between
budgets and the envelope loss high. The bias shrinks when curves come from schedules matched to each
evaluation point (e.g. constant learning rate with cool-downs; Hägele et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from raylm.scaling.curves import CurveData
from raylm.scaling.fit.frontier import FrontierLaw, fit_frontier_rows, frontier_rows_predict
from raylm.scaling.laws import FLOPS_PER_PARAM_TOKEN

DEFAULT_POINTS = 256


class Approach1Unavailable(ValueError):
    """The curves do not make an envelope that resolves N*(C) (too few runs, points or sizes)."""


@dataclass(frozen=True)
class EnvelopeGrid:
    """Every run's curve interpolated onto the grid: ``loss`` (G, R), nan where a run does not reach C."""

    log_c: np.ndarray  # (G,)
    loss: np.ndarray = field(repr=False)  # (G, R)
    params: np.ndarray  # (R,)
    run_ids: list[str]
    covered: np.ndarray = field(repr=False)  # (G,) grid points reached by min_runs runs: the power laws
    tail: np.ndarray = field(repr=False)  # (G,) covered points from the first finished run up: the loss

    def world(self, loss_fn) -> EnvelopeGrid:
        """The same runs and coverage with curves ``loss_fn(N, D)`` (a law's loss): a simulated study's curves."""
        n = self.params[None, :]
        d = np.exp(self.log_c)[:, None] / (FLOPS_PER_PARAM_TOKEN * n)
        return replace(self, loss=np.where(np.isfinite(self.loss), loss_fn(n, d), np.nan))

    def envelope(self, factors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(lowest loss (S, G), index of the run reaching it (S, G)); ``factors`` (S, R) scale each run's curve."""
        m = self.loss[None] if factors is None else self.loss[None] * np.asarray(factors)[:, None, :]
        filled = np.where(np.isfinite(m), m, np.inf)
        arg = np.argmin(filled, axis=2)
        return np.take_along_axis(filled, arg[..., None], axis=2)[..., 0], arg


@dataclass(frozen=True)
class Approach1Fit:
    """Envelope, power laws N* = exp(log_k_n) C^a and D* = exp(log_k_d) C^b, and the envelope's frontier."""

    grid: EnvelopeGrid = field(repr=False)
    envelope_loss: np.ndarray = field(repr=False)  # (G,)
    envelope_params: np.ndarray = field(repr=False)  # (G,)
    a: float
    log_k_n: float
    loss_law: FrontierLaw | None
    loss_note: str = ""

    @property
    def b(self) -> float:
        return 1.0 - self.a

    def n_opt(self, budget):
        return np.exp(self.log_k_n) * np.asarray(budget, dtype=float) ** self.a

    def d_opt(self, budget):
        return np.asarray(budget, dtype=float) / (FLOPS_PER_PARAM_TOKEN * self.n_opt(budget))

    def as_dict(self) -> dict:
        c, tail = np.exp(self.grid.log_c[self.grid.covered]), np.exp(self.grid.log_c[self.grid.tail])
        return {"a": self.a, "b": self.b, "k_N": float(np.exp(self.log_k_n)),
                "k_D": float(np.exp(-self.log_k_n) / FLOPS_PER_PARAM_TOKEN),
                "loss_law": None if self.loss_law is None else self.loss_law.as_dict(), "loss_note": self.loss_note,
                "runs": len(self.grid.run_ids), "grid_points": int(self.grid.covered.sum()),
                "power_law_flops": [float(c.min()), float(c.max())],
                "loss_flops": [float(tail.min()), float(tail.max())],
                "envelope_sizes": sorted({float(n) for n in self.envelope_params[self.grid.covered]})}


def envelope_grid(curves: CurveData, points: int = DEFAULT_POINTS, min_runs: int = 2) -> EnvelopeGrid:
    """Interpolate every run (2+ points) onto ``points`` log-spaced C; raises :class:`Approach1Unavailable`."""
    runs = [(rid, *curves.curve(rid)) for rid in curves.runs]
    runs = [(rid, n, np.log(FLOPS_PER_PARAM_TOKEN * n * t), loss) for rid, n, t, loss in runs if t.size >= 2]
    if len(runs) < max(2, min_runs):
        raise Approach1Unavailable(f"Approach 1 needs curves of {max(2, min_runs)}+ runs with 2+ points each, "
                                   f"got {len(runs)}")
    lo = min(x[0] for _, _, x, _ in runs)
    hi = max(x[-1] for _, _, x, _ in runs)
    log_c = np.linspace(lo, hi, points)
    loss = np.full((points, len(runs)), np.nan)
    for j, (_, _, x, y) in enumerate(runs):
        inside = (log_c >= x[0]) & (log_c <= x[-1])
        loss[inside, j] = np.interp(log_c[inside], x, y)
    covered = np.isfinite(loss).sum(axis=1) >= min_runs
    first_finish = min(x[-1] for _, _, x, _ in runs)
    tail = covered & (log_c >= first_finish - 1e-12)
    if tail.sum() < 2:
        raise Approach1Unavailable(f"Approach 1: only {int(tail.sum())} grid point(s) of compute are reached by "
                                   f"{min_runs}+ runs at or above the first finished run")
    return EnvelopeGrid(log_c=log_c, loss=loss, params=np.array([n for _, n, _, _ in runs]),
                        run_ids=[rid for rid, *_ in runs], covered=covered, tail=tail)


def approach1_rows(grid: EnvelopeGrid, factors: np.ndarray, floor: np.ndarray | None, budgets):
    """N*, D*, L* at ``budgets`` (T,) for each row of run factors (S, R); floor (S,) pins E. Shapes (S, T).

    Rows whose envelope has a single size or whose frontier is undetermined give nan.
    """
    env_loss, arg = grid.envelope(factors)
    x = grid.log_c[grid.covered]
    ln_n = np.log(grid.params)[arg[:, grid.covered]]  # (S, G')
    xc = x - x.mean()
    slope = (ln_n - ln_n.mean(1, keepdims=True)) @ xc / (xc @ xc)
    intercept = ln_n.mean(1) - slope * x.mean()
    resolved = np.ptp(ln_n, axis=1) > 0
    lc = np.log(np.asarray(budgets, dtype=float))[None, :]
    n_opt = np.where(resolved[:, None], np.exp(intercept[:, None] + slope[:, None] * lc), np.nan)
    d_opt = np.exp(lc) / (FLOPS_PER_PARAM_TOKEN * n_opt)
    e, log_c0, gamma = fit_frontier_rows(grid.log_c[grid.tail], env_loss[:, grid.tail], floor)
    loss = frontier_rows_predict(e, log_c0, gamma, budgets)
    return n_opt, d_opt, np.where(resolved[:, None], loss, np.nan)


def fit_approach1(curves: CurveData, *, floor: float | None = None, points: int = DEFAULT_POINTS,
                  min_runs: int = 2) -> Approach1Fit:
    """The envelope, its power laws and its frontier (see the module docstring).

    Raises :class:`Approach1Unavailable` when the envelope does not resolve N*(C). An undetermined loss
    frontier (floor not below the envelope, fewer than 4 grid points for a free floor) leaves
    ``loss_law`` None with the reason in ``loss_note``.
    """
    grid = envelope_grid(curves, points, min_runs)
    env_loss, arg = grid.envelope()
    env_loss, env_n = env_loss[0], grid.params[arg[0]]
    ln_n = np.log(env_n[grid.covered])
    if np.ptp(ln_n) == 0:
        raise Approach1Unavailable(f"Approach 1: one model size (N = {env_n[grid.covered][0]:.4g}) reaches the "
                                   "lowest loss at every covered compute; the envelope does not resolve N*(C)")
    a, log_k = np.polyfit(grid.log_c[grid.covered], ln_n, 1)
    pinned = None if floor is None else np.array([float(floor)])
    e, log_c0, gamma = fit_frontier_rows(grid.log_c[grid.tail], env_loss[None, grid.tail], pinned)
    law, note = None, ""
    if np.isfinite(gamma[0]):
        law = FrontierLaw(E=float(e[0]), C0=float(np.exp(log_c0[0])), gamma=float(gamma[0]),
                          floor="fitted" if floor is None else "pinned")
    else:
        note = ("the envelope's loss does not determine a decreasing frontier"
                + ("" if floor is None else f" above the pinned floor E = {floor:.4g}"))
    return Approach1Fit(grid=grid, envelope_loss=env_loss, envelope_params=env_n, a=float(a), log_k_n=float(log_k),
                        loss_law=law, loss_note=note)
