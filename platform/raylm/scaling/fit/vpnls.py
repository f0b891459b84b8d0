"""Variable projection (VPNLS) for L(N, D) = E + A/N^alpha + B/D^beta: search (alpha, beta) only.

The fit as done by the Open-Athena scaling-law-analysis project (2026, "VPNLS"), an instance of
variable projection (Golub & Pereyra 1973): for fixed exponents (alpha, beta) the law is linear
in (E, A, B), and with E, A, B >= 0 the best of them is a non-negative least-squares problem
(Lawson & Hanson 1974). Here the inner problem is

    min_{E, A, B >= 0}  sum_i ((L_i - E - A N_i^-alpha - B D_i^-beta) / L_i)^2

(relative residuals, about the log residuals log L_i - log pred_i that Approach 3 scores), so the
only search left is over the two exponents: the profile SSE(alpha, beta).

The 3-variable NNLS is solved exactly and for many (alpha, beta) at once (:func:`nnls3`): the
optimum is an unconstrained least-squares solution on some subset of the variables (its
support), and every feasible subset solution is a feasible point, so the NNLS optimum is the
feasible subset solution of least SSE; all 7 non-empty subsets (and the empty one) are solved
from the 3x3 Gram matrix of each cell. The outer search evaluates a grid of exponents (0.02 ..
2.5 step 0.02 by default) through matrix products, then refines the best distinct local minima
of the grid with Nelder-Mead on the profile, each evaluation a closed-form inner solve.

Results come as Approach 3 rows theta = (a, b, e, alpha, beta) = (ln A, ln B, ln E, alpha, beta);
a coefficient the NNLS sets to 0 is floored at :data:`FLOOR` (1e-12) before its log is taken,
i.e. that term starts negligible.
"""

from __future__ import annotations

import itertools

import numpy as np

from raylm.scaling.fit.objective import LogData

#: Default exponent grid for alpha and for beta: 0.02, 0.04, ..., 2.5.
DEFAULT_EXPONENTS = np.round(np.arange(1, 126) * 0.02, 10)
#: E, A or B set to 0 by the NNLS is taken as this before the log of theta.
FLOOR = 1e-12
#: In :func:`vp_starts`, a term set to 0 is also tried at this fraction of the smallest loss.
LIFT = 0.01
#: The non-empty subsets of the three coefficients (E, A, B): candidate supports of the NNLS optimum.
SUBSETS = [s for k in (1, 2, 3) for s in itertools.combinations(range(3), k)]


def nnls3(gram: np.ndarray, rhs: np.ndarray, const: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Exact NNLS of K problems with three unknowns, from Gram matrices (K, 3, 3) and right-hand sides (K, 3).

    Problem k is min_{c >= 0} |y - U c|^2 with gram = U^T U, rhs = U^T y, const = y^T y. Every
    subset of the unknowns is solved unconstrained (the others held at 0), all problems at once;
    the feasible (all >= 0) solution of least SSE, or c = 0, is the NNLS optimum (see the
    module docstring). Columns are scaled to unit norm first, which leaves feasibility unchanged.
    Returns the coefficients (K, 3) and their SSE (K,).
    """
    gram, rhs = np.asarray(gram, dtype=float), np.asarray(rhs, dtype=float)
    const = np.broadcast_to(np.asarray(const, dtype=float), rhs.shape[:1])
    diag = np.sqrt(np.einsum("kii->ki", gram))
    scale = np.where(np.isfinite(diag) & (diag > 0), diag, 1.0)
    g = gram / (scale[:, :, None] * scale[:, None, :])
    h = rhs / scale
    c = _subset_solutions(g, h)  # (K, 7, 3)
    sse = const[:, None] - 2.0 * np.einsum("ki,ksi->ks", h, c) + np.einsum("ksi,kij,ksj->ks", c, g, c)
    sse = np.where(np.all(c >= 0.0, axis=2), sse, np.inf)  # NaN (singular) rows are infeasible too
    pick = np.argmin(sse, axis=1)
    rows = np.arange(h.shape[0])
    best_sse = sse[rows, pick]
    empty = ~(best_sse < const)  # c = 0 is feasible with SSE = const
    best_c = np.where(empty[:, None], 0.0, c[rows, pick])
    return best_c / scale, np.maximum(np.where(empty, const, best_sse), 0.0)


def _subset_solutions(g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Least squares on each subset of :data:`SUBSETS` (the others fixed at 0): (K, 7, 3).

    ``g`` has a unit diagonal (scaled columns), so one unknown gives c_i = h_i, two the 2x2
    closed form, and all three one batched LU solve. Singular systems give NaN rows (infeasible).
    """
    out = np.zeros(h.shape[:1] + (len(SUBSETS), 3))
    with np.errstate(all="ignore"):
        for s, subset in enumerate(SUBSETS):
            if len(subset) == 1:
                out[:, s, subset[0]] = h[:, subset[0]]
            elif len(subset) == 2:
                i, j = subset
                det = 1.0 - g[:, i, j] ** 2
                bad = ~(det > 1e-15)
                out[:, s, i] = (h[:, i] - g[:, i, j] * h[:, j]) / det
                out[:, s, j] = (h[:, j] - g[:, i, j] * h[:, i]) / det
                out[bad, s] = np.nan
        det = np.linalg.det(g)
    ok = np.isfinite(det) & (det > 1e-15) & np.all(np.isfinite(h), axis=1)
    full = np.linalg.solve(np.where(ok[:, None, None], g, np.eye(3)), np.where(ok[:, None], h, 0.0)[..., None])
    out[:, -1] = np.where(ok[:, None], full[..., 0], np.nan)
    return out


def vp_profile(log_n, log_d, loss, alphas=DEFAULT_EXPONENTS, betas=DEFAULT_EXPONENTS):
    """The profile over a grid: SSE, E, A, B, each of shape (len(alphas), len(betas)).

    SSE(alpha, beta) = min_{E, A, B >= 0} sum_i ((L_i - E - A N_i^-alpha - B D_i^-beta) / L_i)^2,
    all cells at once: the Gram entries are matrix products of the per-exponent columns.
    """
    log_n, log_d, loss = (np.asarray(v, dtype=float) for v in (log_n, log_d, loss))
    alphas, betas = np.atleast_1d(np.asarray(alphas, dtype=float)), np.atleast_1d(np.asarray(betas, dtype=float))
    one = 1.0 / loss
    x = np.exp(-alphas[:, None] * log_n[None, :]) * one  # (Ka, n): N^-alpha / L
    y = np.exp(-betas[:, None] * log_d[None, :]) * one  # (Kb, n): D^-beta / L
    ka, kb = alphas.size, betas.size
    gram = np.empty((ka, kb, 3, 3))
    gram[..., 0, 0] = one @ one
    gram[..., 0, 1] = gram[..., 1, 0] = (x @ one)[:, None]
    gram[..., 0, 2] = gram[..., 2, 0] = (y @ one)[None, :]
    gram[..., 1, 1] = np.einsum("an,an->a", x, x)[:, None]
    gram[..., 2, 2] = np.einsum("bn,bn->b", y, y)[None, :]
    gram[..., 1, 2] = gram[..., 2, 1] = x @ y.T
    rhs = np.empty((ka, kb, 3))
    rhs[..., 0], rhs[..., 1], rhs[..., 2] = one.sum(), x.sum(axis=1)[:, None], y.sum(axis=1)[None, :]
    coef, sse = nnls3(gram.reshape(-1, 3, 3), rhs.reshape(-1, 3), float(loss.size))
    coef = coef.reshape(ka, kb, 3)
    return sse.reshape(ka, kb), coef[..., 0], coef[..., 1], coef[..., 2]


def profile_point(log_n, log_d, loss, alpha: float, beta: float) -> tuple[float, np.ndarray]:
    """SSE and (E, A, B) at one (alpha, beta); the SSE is summed from the residuals, exact down to tiny values.

    When the unconstrained least-squares solution (by SVD of the column-scaled matrix, the accurate
    route) is feasible it is the NNLS optimum; otherwise :func:`nnls3` decides.
    """
    one = 1.0 / loss
    u = np.stack([one, np.exp(-alpha * log_n) * one, np.exp(-beta * log_d) * one], axis=1)  # (n, 3)
    target = np.ones_like(one)
    norms = np.linalg.norm(u, axis=0)  # unit columns: a term far below the others is not cut off as rank loss
    coef = np.linalg.lstsq(u / norms, target, rcond=None)[0] / norms
    if not np.all(coef >= 0.0):
        coef = nnls3((u.T @ u)[None], u.sum(axis=0)[None], float(loss.size))[0][0]
    resid = target - u @ coef
    return float(resid @ resid), coef


def _grid_minima(sse: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Cells no higher than any of their 8 neighbours (distinct basins), lowest first, at most ``limit``."""
    padded = np.pad(sse, 1, constant_values=np.inf)
    ka, kb = sse.shape
    is_min = np.isfinite(sse)
    for da, db in itertools.product((-1, 0, 1), repeat=2):
        if da or db:
            is_min &= sse <= padded[1 + da : 1 + da + ka, 1 + db : 1 + db + kb]
    cells = np.argwhere(is_min)
    order = np.argsort(sse[is_min], kind="stable")
    return [tuple(map(int, cells[i])) for i in order[:limit]]


def _refine(logs3, start: tuple[float, float, float], step: tuple[float, float], upper: float):
    """Nelder-Mead on the profile SSE(alpha, beta) from a grid cell ``start`` = (alpha, beta, sse).

    Returns (alpha, beta, sse, coef) at the end point. Stops when the simplex is within 1e-10 in
    both exponents and its SSE values agree to 1e-12 of the cell's SSE (rounding noise of the
    profile), or after 600 evaluations.
    """
    from scipy.optimize import minimize

    def profile(p):
        if not (0.0 < p[0] <= upper and 0.0 < p[1] <= upper):
            return np.inf
        return profile_point(*logs3, p[0], p[1])[0]

    x0 = np.array(start[:2])
    simplex = np.array([x0, x0 + [step[0], 0.0], x0 + [0.0, step[1]]])
    options = {"initial_simplex": simplex, "xatol": 1e-10, "fatol": 1e-12 * start[2], "maxfev": 600}
    res = minimize(profile, x0, method="Nelder-Mead", options=options)
    alpha, beta = (float(v) for v in res.x)
    sse, coef = profile_point(*logs3, alpha, beta)
    return alpha, beta, sse, coef


def _as_logs(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log N, log D, L) from a :class:`LogData`, a ScalingData (its ``.log``) or a tuple of the three logs."""
    logs = data if isinstance(data, LogData) else getattr(data, "log", None)
    if logs is None:
        logs = LogData(*(np.asarray(v, dtype=float) for v in data))
    return logs.log_n, logs.log_d, np.exp(logs.log_loss)


def theta_row(coef: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """(E, A, B) and the exponents as an Approach 3 row (ln A, ln B, ln E, alpha, beta), zeros floored at FLOOR."""
    e, a, b = np.log(np.maximum(np.asarray(coef, dtype=float), FLOOR))
    return np.array([a, b, e, alpha, beta])


def vp_optima(data, k: int = 5, alphas=DEFAULT_EXPONENTS, betas=DEFAULT_EXPONENTS, candidates: int | None = None):
    """The ``k`` best distinct refined profile optima, best first: theta rows (m, 5) and their SSE (m,), m <= k.

    The ``candidates`` (default 2k) lowest grid minima are each refined; refined optima within 1e-4
    of a better one in both exponents count as the same.
    """
    logs3 = _as_logs(data)
    alphas, betas = np.sort(np.asarray(alphas, dtype=float)), np.sort(np.asarray(betas, dtype=float))
    sse, *_ = vp_profile(*logs3, alphas, betas)
    step = (_spacing(alphas), _spacing(betas))
    upper = 2.0 * max(alphas[-1], betas[-1])
    cells = _grid_minima(sse, candidates or 2 * k)
    found = [_refine(logs3, (alphas[i], betas[j], sse[i, j]), step, upper) for i, j in cells]
    found.sort(key=lambda item: item[2])
    rows, values = [], []
    for alpha, beta, value, coef in found:
        if len(rows) < k and all(abs(alpha - r[3]) > 1e-4 or abs(beta - r[4]) > 1e-4 for r in rows):
            rows.append(theta_row(coef, alpha, beta))
            values.append(value)
    return np.array(rows).reshape(-1, 5), np.array(values)


def _spacing(grid: np.ndarray) -> float:
    return float(np.median(np.diff(grid))) if grid.size > 1 else 0.02


def vp_starts(data, k: int = 5, alphas=DEFAULT_EXPONENTS, betas=DEFAULT_EXPONENTS) -> np.ndarray:
    """Starts for the Approach 3 fit: the ``k`` best distinct VP optima as theta rows, best first.

    An optimum whose NNLS set E, A or B to 0 sits, in log parameters, where that term has no
    gradient (its log is ln 1e-12), so a local fit from it can never bring the term back. Each such
    row is followed by a lifted copy in which every zero term is worth :data:`LIFT` of the smallest
    loss (E = LIFT min L; A N^-alpha, B D^-beta the same at the geometric mean of N, D): (m, 5), m <= 2k.
    """
    log_n, log_d, loss = _as_logs(data)
    rows = []
    for row in vp_optima((log_n, log_d, np.log(loss)), k, alphas, betas)[0]:
        rows.append(row)
        floored = row[:3] <= np.log(FLOOR) + 1e-9
        if floored.any():
            level = np.log(LIFT * loss.min())
            lifted = np.array([level + row[3] * log_n.mean(), level + row[4] * log_d.mean(), level])
            rows.append(np.where(np.append(floored, [False, False]), np.append(lifted, [0.0, 0.0]), row))
    return np.array(rows).reshape(-1, 5)


def fit_vpnls(data, alphas=DEFAULT_EXPONENTS, betas=DEFAULT_EXPONENTS) -> tuple[np.ndarray, float]:
    """The VP fit itself: the best profile optimum as theta (5,) and its relative SSE."""
    rows, values = vp_optima(data, 1, alphas, betas, candidates=5)
    return rows[0], float(values[0])
