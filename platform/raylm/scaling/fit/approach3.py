"""Approach 3: fit L(N, D) = E + A/N^alpha + B/D^beta to every run at once.

The procedure of Hoffmann et al. (2022), section 3.3 and Appendix D.2, as replicated by
Besiroglu et al. (2024), section 2:

    minimise  sum_i Huber_delta( log L_i - logsumexp(a - alpha log N_i, b - beta log D_i, e) )

over theta = (a, b, e, alpha, beta), delta = 1e-3, summed (not averaged) over points, with
L-BFGS from every start of the grid alpha, beta in {0, .5, ..., 2}, e in {-1, -.5, ..., 1},
a, b in {0, 5, ..., 25} (4,500 starts); the lowest objective wins. A = exp(a), B = exp(b), E = exp(e).

How it is computed here (same objective, same starts, lowest objective wins; about 100x faster):

1. every start runs at once through a batched trust-region Newton method with the exact gradient
   and Hessian (:mod:`raylm.scaling.fit.batched_newton`), for at most ``MAX_ITER`` (150) iterations each
   (a start still creeping along a plateau then stops where it is, as an L-BFGS run stops on its
   tolerances; the best optimum is reached by hundreds of starts well within the budget);
2. the ``POLISH`` (5) best distinct end points are finished with ``scipy.optimize.minimize``
   (L-BFGS-B, analytic gradient, tight tolerances); the lowest objective of all wins.

``engine="vp"`` replaces the 4,500-start grid by a handful of starts from variable projection
(:mod:`raylm.scaling.fit.vpnls`; the VPNLS fit of the Open-Athena scaling-law-analysis project, 2026):
for fixed (alpha, beta) the law is linear in (E, A, B) >= 0, so those come from an exact
non-negative least-squares solve (on relative residuals, about the log residuals) and only the two
exponents are searched, over a grid and then locally. The ``VP_STARTS`` best distinct profile
optima (each with a copy that revives any term the NNLS set to 0, see
:func:`~raylm.scaling.fit.vpnls.vp_starts`) are then finished on the published Huber objective exactly
as above (batched Newton, then L-BFGS-B); the lowest objective wins. A string ``starts`` is
ignored by this engine; explicit rows are polished alongside the VP starts. Some 50x faster than
the batched grid, and the same optimum on the synthetic and public ladders the tests check.

``engine="scipy"`` instead runs L-BFGS-B with the analytic gradient from every start, one by one:
the textbook procedure, slower, kept as the reference the batched engine is checked against.

Bootstrap (Besiroglu et al. 2024, section 3: 4,000 resamples of the points): each resample
is refit from the full-data optimum and the next ``BOOTSTRAP_STARTS - 1`` best distinct end
points of the grid (not the whole grid: a resample moves the optimum only a little, so the
full-data basins are where its optimum lies; the objective is rugged at small scales, hence a
few nearby starts rather than one); all resamples run as one batch. Resampling with
replacement is carried as integer point weights (multinomial counts), the same objective.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from raylm.errors import UserError
from raylm.scaling.data import ScalingData
from raylm.scaling.fit.batched_newton import minimize_batched
from raylm.scaling.fit.bootstrap import BootstrapSummary
from raylm.scaling.fit.objective import LogData, objective, objective_and_grad, objective_grad_hess
from raylm.scaling.fit.vpnls import vp_starts
from raylm.scaling.laws import ChinchillaLaw

ENGINES = ("batched", "scipy", "vp")

DEFAULT_DELTA = 1e-3
MAX_ITER = 150  # batched Newton iterations per start
POLISH = 5  # best distinct end points finished with L-BFGS-B
BOOTSTRAP_STARTS = 3  # optima each bootstrap resample is refit from
VP_STARTS = 5  # engine="vp": this many distinct variable-projection optima (and lifted copies) start the fit

#: Start grids: values of (alpha, beta, e, a, b); "full" is the 4,500-start grid of Besiroglu et al. (2024).
START_GRIDS = {
    "full": ([0.0, 0.5, 1.0, 1.5, 2.0], [0.0, 0.5, 1.0, 1.5, 2.0], [-1.0, -0.5, 0.0, 0.5, 1.0],
             [0.0, 5.0, 10.0, 15.0, 20.0, 25.0], [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]),
    "coarse": ([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [-1.0, 0.0, 1.0], [0.0, 10.0, 20.0], [0.0, 10.0, 20.0]),
}


def start_grid(kind: str = "full") -> np.ndarray:
    """Starts as rows (a, b, e, alpha, beta), enumerated alpha-major like the reference code."""
    if kind not in START_GRIDS:
        raise UserError(f"unknown start grid {kind!r}; choose one of {', '.join(START_GRIDS)}")
    alphas, betas, es, as_, bs = START_GRIDS[kind]
    return np.array([[a, b, e, al, be] for al, be, e, a, b in itertools.product(alphas, betas, es, as_, bs)])


@dataclass(frozen=True)
class Approach3Fit:
    """The fitted law, its objective, how the search went, and bootstrap intervals when asked for."""

    law: ChinchillaLaw
    theta: np.ndarray  # (a, b, e, alpha, beta)
    objective: float
    delta: float
    n_points: int
    n_starts: int
    best_start: np.ndarray
    starts_at_best: int  # starts whose end point is within 1e-6 (relative) of the best objective
    local_optima: np.ndarray = field(repr=False)  # distinct end points, best first (rows of theta)
    start_objectives: np.ndarray = field(repr=False)  # objective reached from each start, in start order
    bootstrap: BootstrapSummary | None = None

    def as_dict(self) -> dict:
        out = {**self.law.as_dict(), "objective": self.objective, "delta": self.delta, "n_points": self.n_points,
               "n_starts": self.n_starts, "starts_at_best": self.starts_at_best,
               "best_start": dict(zip(("a", "b", "e", "alpha", "beta"), map(float, self.best_start), strict=True))}
        if self.bootstrap is not None:
            boot = self.bootstrap.as_dict()
            out["stderr"], out["intervals"] = boot.pop("stderr"), boot.pop("intervals")
            out["bootstrap"] = boot
        return out


def fit_approach3(
    data: ScalingData,
    *,
    starts: str | np.ndarray = "full",
    delta: float = DEFAULT_DELTA,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    engine: str = "batched",
) -> Approach3Fit:
    """Fit the law by the procedure of the module docstring; ``bootstrap`` > 0 adds intervals.

    The batched engine runs at most :data:`MAX_ITER` Newton iterations per start and polishes the
    :data:`POLISH` best distinct end points; the bootstrap refits from :data:`BOOTSTRAP_STARTS` optima.
    """
    x0 = start_grid(starts) if isinstance(starts, str) else np.atleast_2d(np.asarray(starts, dtype=float))
    _check_options(x0, delta, bootstrap, level, engine)
    logs = data.log
    if engine == "vp":
        vp = vp_starts(logs, k=VP_STARTS)
        x0 = vp if isinstance(starts, str) else np.vstack([vp, x0])
    if engine == "scipy":
        ends, fun = _scipy_each_start(logs, x0, delta)
    else:
        ends, fun = _batched_then_polish(logs, x0, delta, MAX_ITER, POLISH)
    best = int(np.argmin(fun))
    if not np.isfinite(fun[best]):
        raise UserError("the Approach 3 fit failed from every start (objective not finite)")
    theta, f_best = ends[best], float(fun[best])
    optima = _distinct(ends, fun)
    summary = None
    if bootstrap:
        warm = optima[:BOOTSTRAP_STARTS]
        summary = bootstrap_approach3(logs, warm, delta, bootstrap, seed, level)
    return Approach3Fit(
        law=ChinchillaLaw.from_log_params(*theta), theta=theta, objective=f_best, delta=delta,
        n_points=len(data), n_starts=x0.shape[0], best_start=x0[best],
        starts_at_best=int(np.sum(fun <= f_best + 1e-6 * abs(f_best))), local_optima=optima, start_objectives=fun,
        bootstrap=summary,
    )


def bootstrap_approach3(
    logs: LogData, warm: np.ndarray, delta: float, n_resamples: int, seed: int, level: float, max_iter: int = 200
) -> BootstrapSummary:
    """Refit ``n_resamples`` resamples (with replacement) of the points, each from every row of ``warm``."""
    rng = np.random.default_rng(seed)
    n = logs.size
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)  # (R, n)
    k = warm.shape[0]
    weights = np.repeat(counts, k, axis=0)  # resample r, start j at row r * k + j
    x0 = np.tile(warm, (n_resamples, 1))

    def evaluate(theta, rows):
        return objective_grad_hess(theta, logs, delta, weights[rows])

    result = minimize_batched(evaluate, x0, max_iter=max_iter)
    fun = result.fun.reshape(n_resamples, k)
    pick = np.argmin(fun, axis=1)
    samples = result.x.reshape(n_resamples, k, -1)[np.arange(n_resamples), pick]
    ok = np.isfinite(fun[np.arange(n_resamples), pick]) & np.all(np.isfinite(samples), axis=1)
    return BootstrapSummary(samples=samples[ok], level=level, n_resamples=n_resamples, seed=seed)


def _batched_then_polish(logs: LogData, x0: np.ndarray, delta: float, max_iter: int, polish: int):
    result = minimize_batched(lambda theta, rows: objective_grad_hess(theta, logs, delta), x0, max_iter=max_iter)
    ends, fun = result.x.copy(), result.fun.copy()
    order = np.argsort(fun)
    picked: list[int] = []
    for i in order:
        if len(picked) >= polish or not np.isfinite(fun[i]):
            break
        if all(not _same_point(ends[i], ends[j]) for j in picked):
            picked.append(int(i))
    for i in picked:
        x, f = lbfgs_from_start(logs, ends[i], delta, tight=True)
        if f < fun[i]:
            ends[i], fun[i] = x, f
    return ends, fun


def _scipy_each_start(logs: LogData, x0: np.ndarray, delta: float):
    ends, fun = np.empty_like(x0), np.empty(x0.shape[0])
    for i, start in enumerate(x0):
        ends[i], fun[i] = lbfgs_from_start(logs, start, delta, tight=False)
    return ends, fun


def lbfgs_from_start(logs: LogData, x0: np.ndarray, delta: float, tight: bool) -> tuple[np.ndarray, float]:
    """scipy L-BFGS-B with the analytic gradient; scipy's default tolerances unless ``tight``."""
    from scipy.optimize import minimize

    options = {"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000, "maxcor": 20} if tight else {}
    with np.errstate(all="ignore"):
        res = minimize(objective_and_grad, x0, args=(logs, delta), jac=True, method="L-BFGS-B", options=options)
        fun = float(objective(res.x, logs, delta))
    return res.x, (fun if np.isfinite(fun) else np.inf)


def _same_point(x: np.ndarray, y: np.ndarray, rtol: float = 1e-5) -> bool:
    return bool(np.all(np.abs(x - y) <= rtol * (1.0 + np.abs(x))))


def _distinct(ends: np.ndarray, fun: np.ndarray, limit: int = 20) -> np.ndarray:
    """Up to ``limit`` distinct end points with finite objective, best first."""
    kept: list[np.ndarray] = []
    for i in np.argsort(fun):
        if not np.isfinite(fun[i]) or len(kept) >= limit:
            break
        if all(not _same_point(ends[i], other, rtol=1e-3) for other in kept):
            kept.append(ends[i])
    return np.array(kept)


def _check_options(x0: np.ndarray, delta: float, bootstrap: int, level: float, engine: str) -> None:
    if x0.ndim != 2 or x0.shape[1] != 5 or x0.shape[0] == 0 or not np.all(np.isfinite(x0)):
        raise UserError(f"starts must be 'full', 'coarse' or finite rows (a, b, e, alpha, beta), got shape {x0.shape}")
    if not (np.isfinite(delta) and delta > 0):
        raise UserError(f"Huber delta must be positive, got {delta}")
    if bootstrap < 0:
        raise UserError(f"bootstrap resamples must be >= 0, got {bootstrap}")
    if not 0 < level < 1:
        raise UserError(f"interval level must be between 0 and 1, got {level}")
    if engine not in ENGINES:
        raise UserError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
