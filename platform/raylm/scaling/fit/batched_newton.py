"""A trust-region Newton method run on many small independent problems at once, in numpy.

Used to run every start of the Approach 3 grid (Hoffmann et al. 2022, section 3.3;
Besiroglu et al. 2024: 4,500 starts) and every bootstrap refit as one array program
instead of thousands of Python-level optimiser calls.

Each iteration, for every problem still running, with the exact gradient g and Hessian
H = V diag(l) V^T: the model Hessian is V diag(|l|) V^T (the absolute-value modification,
Nocedal & Wright 2006, section 3.4: Newton where H is positive definite, a descent direction
everywhere), and the step p(mu) = -V diag(1 / (|l| + mu)) V^T g is the Levenberg-Marquardt step
with the smallest mu >= 0 that keeps |p| within the trust radius (found by bisection on log mu).
The step is kept if f decreases; the radius shrinks after poor or rejected steps and grows after
good ones (Nocedal & Wright 2006, Algorithm 4.1). A problem stops when an accepted step lowers f by
less than ``ftol`` relative to f, when the radius falls below ``min_radius`` (no descent left at
machine precision), or at ``max_iter``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from raylm.scaling.fit.blocks import run_blocks

# evaluate(theta (k, p), rows (k,)) -> f (k,), g (k, p), H (k, p, p) for the problems `rows`.
Evaluate = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class BatchResult:
    x: np.ndarray          # (S, p) final parameters
    fun: np.ndarray        # (S,) final objective
    iterations: np.ndarray  # (S,) iterations used
    converged: np.ndarray  # (S,) stopped by a convergence test rather than max_iter


def minimize_batched(
    evaluate: Evaluate,
    x0: np.ndarray,
    *,
    max_iter: int = 300,
    ftol: float = 1e-13,
    radius: float = 1.0,
    max_radius: float = 10.0,
    min_radius: float = 1e-12,
) -> BatchResult:
    """Minimise S independent problems from the rows of ``x0`` (S, p); see the module docstring."""
    with np.errstate(all="ignore"):  # wild trial points overflow; their f is not finite and they are rejected
        return _minimize(evaluate, np.array(x0, dtype=float), max_iter, ftol, radius, max_radius, min_radius)


def _minimize(evaluate, x, max_iter, ftol, radius, max_radius, min_radius) -> BatchResult:
    n_prob = x.shape[0]
    f, g, h = evaluate(x, np.arange(n_prob))
    f = np.where(np.isfinite(f), f, np.inf)
    lam, vec = _eigh(h)  # kept per problem; only accepted steps change them
    delta = np.full(n_prob, float(radius))
    iterations = np.zeros(n_prob, dtype=int)
    converged = np.zeros(n_prob, dtype=bool)
    active = np.flatnonzero(np.isfinite(f))
    for _ in range(max_iter):
        if active.size == 0:
            break
        step, predicted = _steps(g[active], lam[active], vec[active], delta[active])
        x_try = x[active] + step
        f_try, g_try, h_try = evaluate(x_try, active)
        ok = np.isfinite(f_try) & (f_try < f[active])
        actual = f[active] - np.where(ok, f_try, f[active])
        ratio = np.where(ok & (predicted > 0), actual / np.maximum(predicted, 1e-300), 0.0)
        length = np.linalg.norm(step, axis=1)
        at_edge = length >= 0.99 * delta[active]
        delta[active] = np.where(
            ratio < 0.25, 0.25 * length,
            np.where((ratio > 0.75) & at_edge, np.minimum(2.0 * delta[active], max_radius), delta[active]),
        )
        small = ok & (actual <= ftol * np.maximum(np.abs(f[active]), 1e-300))
        keep = active[ok]
        x[keep], f[keep], g[keep] = x_try[ok], f_try[ok], g_try[ok]
        lam[keep], vec[keep] = _eigh(h_try[ok])
        iterations[active] += 1
        stop = small | (delta[active] < min_radius * (1.0 + np.linalg.norm(x[active], axis=1)))
        converged[active[stop]] = True
        active = active[~stop]
    return BatchResult(x=x, fun=f, iterations=iterations, converged=converged)


def _eigh(h: np.ndarray, rows_per_block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of each (symmetrised, finite) Hessian, over row blocks on the shared threads."""
    lam, vec = np.empty(h.shape[:2]), np.empty(h.shape)

    def run(rows: slice) -> None:
        block = h[rows]
        block = np.where(np.isfinite(block), 0.5 * (block + block.transpose(0, 2, 1)), 0.0)
        lam[rows], vec[rows] = np.linalg.eigh(block)

    run_blocks(run, h.shape[0], rows_per_block)
    return lam, vec


def _steps(g, lam, vec, radius, rows_per_block: int = 512):
    """:func:`trust_region_step` over row blocks on the shared threads."""
    step, predicted = np.empty_like(g), np.empty(g.shape[0])

    def run(rows: slice) -> None:
        step[rows], predicted[rows] = trust_region_step(g[rows], lam[rows], vec[rows], radius[rows])

    run_blocks(run, g.shape[0], rows_per_block)
    return step, predicted


def trust_region_step(g: np.ndarray, lam: np.ndarray, vec: np.ndarray, radius: np.ndarray, bisections: int = 16):
    """Steps p = -V diag(1/(|l| + mu)) V^T g with |p| <= radius, and the model's predicted decrease.

    ``lam``, ``vec``: eigenvalues and eigenvectors (columns) of each Hessian.
    """
    alam = np.abs(lam)
    gv = np.einsum("kij,ki->kj", vec, np.where(np.isfinite(g), g, 0.0))  # V^T g

    def norm(mu):
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero eigenvalue at mu = 0 gives inf: no step
            return np.sqrt(np.sum((gv / (alam + mu[:, None])) ** 2, axis=1))

    gnorm = np.linalg.norm(gv, axis=1)
    hi = np.maximum(gnorm / radius, 1e-300)  # |p(hi)| <= |g| / hi = radius
    lo = np.maximum(hi * 1e-20, 1e-300)
    newton_fits = norm(np.zeros_like(hi)) <= radius
    for _ in range(bisections):  # geometric bisection: |p(mu)| decreases in mu
        mid = np.sqrt(lo * hi)
        inside = norm(mid) <= radius
        hi, lo = np.where(inside, mid, hi), np.where(inside, lo, mid)
    mu = np.where(newton_fits, 0.0, hi)
    coef = -gv / np.maximum(alam + mu[:, None], 1e-300)
    step = np.einsum("kij,kj->ki", vec, coef)
    predicted = -(np.sum(gv * coef, axis=1) + 0.5 * np.sum(alam * coef * coef, axis=1))
    return step, predicted
