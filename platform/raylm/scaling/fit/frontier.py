"""The compute frontier L*(C) = E + (C0 / C)^gamma: the lowest loss reachable with compute C.

Kaplan et al. (2020), eq. (1.4) and section 6, fit L(C_min) = (C_c / C_min)^alpha_C to the
compute-efficient frontier; with an irreducible term E (Henighan et al. 2020, eq. 1.1; the
"E" of Hoffmann et al. 2022, eq. 2) it is L*(C) = E + (C0/C)^gamma. The Chinchilla law's own
optimum has exactly this form: L(N*(C), D*(C)) = E + K C^(-alpha beta / (alpha + beta))
(Hoffmann et al. 2022, eq. 4), so the frontier is a law with three parameters where the
Chinchilla law has five.

Fit (numbers in, numbers out): with x = ln C and z = ln(L - E), the law is the line
z = gamma ln C0 - gamma x. Given E, weighted least squares of z on x with weights
((L - E) / L)^2 is the first-order equivalent of least squares on ln L (the scale of run noise):
d ln L = ((L - E) / L) d ln(L - E). With two or three budgets the three parameters are not
determined (two points fix any curve with a free floor), so E is pinned (Marin's ladder pins
its floor the same way); a free E is profiled on a grid and needs at least
:data:`MIN_BUDGETS_FREE_FLOOR` budgets. Every function takes rows (S independent problems) so
that bootstrap refits run as one array program.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_BUDGETS_PINNED_FLOOR = 2
MIN_BUDGETS_PINNED_EXPONENT = 2
MIN_BUDGETS_FREE_FLOOR = 4
_FLOOR_GRID = 96  # candidate floors per refinement pass of the free-floor profile


@dataclass(frozen=True)
class FrontierLaw:
    """L*(C) = E + (C0 / C)^gamma; ``floor`` and ``exponent`` say whether E and gamma were ``"pinned"`` or
    ``"fitted"``."""

    E: float
    C0: float
    gamma: float
    floor: str = "pinned"
    exponent: str = "fitted"

    def __call__(self, budget):
        c = np.asarray(budget, dtype=float)
        return self.E + (self.C0 / c) ** self.gamma

    def as_dict(self) -> dict:
        return {"E": self.E, "C0": self.C0, "gamma": self.gamma, "floor": self.floor, "exponent": self.exponent}


class FrontierUnavailable(ValueError):
    """The minima do not determine a frontier (too few budgets, floor not below them, not decreasing)."""


def fit_frontier(budgets, losses, floor: float | None = None) -> FrontierLaw:
    """One frontier through per-budget minimum ``losses``; ``floor`` pins E (None: fit it, 4+ budgets).

    Raises :class:`FrontierUnavailable` with the reason when the points do not determine a decreasing law.
    """
    c = np.asarray(budgets, dtype=float)
    y = np.asarray(losses, dtype=float)[None, :]
    pinned = None if floor is None else np.array([float(floor)])
    check_frontier_inputs(c, y[0], floor)
    e, log_c0, gamma = fit_frontier_rows(np.log(c), y, pinned)
    if not np.isfinite(gamma[0]) or gamma[0] <= 0:
        raise FrontierUnavailable(f"the minimum losses {np.round(y[0], 4).tolist()} do not decrease with compute "
                                  f"as a power law (gamma = {gamma[0]:.3g})")
    return FrontierLaw(E=float(e[0]), C0=float(np.exp(log_c0[0])), gamma=float(gamma[0]),
                       floor="fitted" if floor is None else "pinned")


def fit_frontier_pinned_exponent(budgets, losses, gamma: float) -> FrontierLaw:
    """One frontier through per-budget minimum ``losses`` with its exponent ``gamma`` pinned, E and C0 fitted.

    Raises :class:`FrontierUnavailable` with the reason when the points do not determine it.
    """
    c = np.asarray(budgets, dtype=float)
    y = np.asarray(losses, dtype=float)
    if np.unique(c).size < MIN_BUDGETS_PINNED_EXPONENT:
        raise FrontierUnavailable(f"the frontier with a pinned exponent needs {MIN_BUDGETS_PINNED_EXPONENT}+ budgets, "
                                  f"got {np.unique(c).size}")
    e, log_c0, g = fit_frontier_rows_pinned_exponent(np.log(c), y[None, :], float(gamma))
    if not np.isfinite(e[0]):
        raise FrontierUnavailable(f"the minimum losses {np.round(y, 4).tolist()} give no floor E >= 0 with the "
                                  f"exponent pinned at {gamma:.3g}")
    return FrontierLaw(E=float(e[0]), C0=float(np.exp(log_c0[0])), gamma=float(g[0]), floor="fitted",
                       exponent="pinned")


def check_frontier_inputs(budgets: np.ndarray, losses: np.ndarray, floor: float | None) -> None:
    """Raise :class:`FrontierUnavailable` when the points cannot determine the law; say what would."""
    k = np.unique(budgets).size
    need = MIN_BUDGETS_FREE_FLOOR if floor is None else MIN_BUDGETS_PINNED_FLOOR
    if k < need:
        how = "a free floor E" if floor is None else "a pinned floor E"
        hint = "; pin E (e.g. to the Approach 3 fit's E)" if floor is None else ""
        raise FrontierUnavailable(f"the frontier with {how} needs {need}+ budgets, got {k}{hint}")
    if floor is not None and not (np.isfinite(floor) and floor >= 0):
        raise FrontierUnavailable(f"the pinned floor E must be finite and >= 0, got {floor}")
    if floor is not None and np.min(losses) <= floor:
        raise FrontierUnavailable(f"the pinned floor E = {floor:.4g} is not below every budget's minimum loss "
                                  f"(lowest {np.min(losses):.4g})")


def fit_frontier_rows(log_c: np.ndarray, losses: np.ndarray, floor: np.ndarray | None,
                      mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E, ln C0, gamma) per row of ``losses`` (S, K) at ``log_c`` (K,) or (S, K); nan where undetermined.

    ``floor`` (S,) pins E per row; None profiles E over [0, min loss) (coarse grid, then a finer one
    around the best). ``mask`` (S, K) drops points (False).
    """
    y = np.asarray(losses, dtype=float)
    x = np.broadcast_to(np.asarray(log_c, dtype=float), y.shape)
    ok = np.isfinite(y) & (y > 0) if mask is None else (mask & np.isfinite(y) & (y > 0))
    if floor is not None:
        e = np.asarray(floor, dtype=float).reshape(-1)
        if e.size == 1 and y.shape[0] > 1:
            e = np.full(y.shape[0], e[0])
        u, v, _ = _line_given_floor(x, y, e, ok)
        return _as_params(e, u, v)
    return _profile_floor(x, y, ok)


def fit_frontier_rows_pinned_exponent(log_c: np.ndarray, losses: np.ndarray,
                                      gamma) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E, ln C0, gamma) per row of ``losses`` (S, K) at ``log_c`` (K,) with the exponent ``gamma`` (S,) or a
    number pinned; nan where undetermined (fewer than 2 finite minima, E < 0 or no decrease).

    Given gamma the law L = E + A exp(-gamma (x - xbar)) is linear in (E, A): weighted least squares with
    weights 1 / L^2, the first-order equivalent of least squares on ln L. Two budgets determine it, and
    the floor is no longer the free parameter that a short ladder cannot pin down (docs/scaling.md).
    """
    y = np.asarray(losses, dtype=float)
    s = y.shape[0]
    ok = np.isfinite(y) & (y > 0)
    x = np.broadcast_to(np.asarray(log_c, dtype=float), y.shape)
    g = np.broadcast_to(np.asarray(gamma, dtype=float).reshape(-1), (s,))
    with np.errstate(all="ignore"):
        xbar = np.where(ok, x, 0.0).sum(1) / np.maximum(ok.sum(1), 1)
        f = np.exp(-g[:, None] * (x - xbar[:, None]))
        w = np.where(ok, 1.0 / np.where(ok, y, 1.0) ** 2, 0.0)
        yy = np.where(ok, y, 0.0)
        s11, s12, s22 = w.sum(1), (w * f).sum(1), (w * f * f).sum(1)
        b1, b2 = (w * yy).sum(1), (w * f * yy).sum(1)
        det = s11 * s22 - s12 ** 2
        e = (s22 * b1 - s12 * b2) / det
        a = (s11 * b2 - s12 * b1) / det
        good = ((ok.sum(1) >= MIN_BUDGETS_PINNED_EXPONENT) & (det > 1e-12 * s11 * s22) & (e >= 0) & (a > 0)
                & np.isfinite(g) & (g > 0))
        log_c0 = xbar + np.log(a) / g  # A exp(-gamma (x - xbar)) = (C0 / C)^gamma
    nan = np.full(s, np.nan)
    return np.where(good, e, nan), np.where(good, log_c0, nan), np.where(good, g, nan)


def frontier_rows_predict(e: np.ndarray, log_c0: np.ndarray, gamma: np.ndarray, budgets) -> np.ndarray:
    """L*(C) of each row (S,) at ``budgets`` (T,): shape (S, T)."""
    lc = np.log(np.asarray(budgets, dtype=float))[None, :]
    with np.errstate(all="ignore"):
        return e[:, None] + np.exp(gamma[:, None] * (log_c0[:, None] - lc))


@dataclass(frozen=True)
class FloorLines:
    """Per row and floor E: the weighted least-squares line z = ln(y - E) = u + v x of the module docstring
    (weights ((y - E) / y)^2, zero where a point is masked or not above E), with its z, weights and sums."""

    valid: np.ndarray  # (S, n) points used
    z: np.ndarray
    w: np.ndarray
    sw: np.ndarray  # (S,) sum w, sum w x, sum w x^2 and det = sw sxx - sx^2 of X'WX
    sx: np.ndarray
    sxx: np.ndarray
    det: np.ndarray
    u: np.ndarray
    v: np.ndarray


def floor_lines(x, y, e, ok) -> FloorLines:
    """:class:`FloorLines` for rows ``x``, ``y`` (S, n) with mask ``ok`` and floors ``e`` (S,) (nan where singular)."""
    with np.errstate(all="ignore"):
        gap = y - e[:, None]
        valid = ok & (gap > 0)
        z = np.where(valid, np.log(np.where(valid, gap, 1.0)), 0.0)
        w = np.where(valid, (gap / y) ** 2, 0.0)
        sw, sx, sz = w.sum(1), (w * x).sum(1), (w * z).sum(1)
        sxx, sxz = (w * x * x).sum(1), (w * x * z).sum(1)
        det = sw * sxx - sx * sx
        v = (sw * sxz - sx * sz) / det
        u = (sz - v * sx) / sw
    return FloorLines(valid, z, w, sw, sx, sxx, det, u, v)


def _line_given_floor(x, y, e, ok):
    """Weighted least squares of z = ln(y - E) = u + v x; returns u, v and the SSE of ln y."""
    lines = floor_lines(x, y, e, ok)
    valid, sw, det = lines.valid, lines.sw, lines.det
    with np.errstate(all="ignore"):
        enough = (valid.sum(1) >= MIN_BUDGETS_PINNED_FLOOR) & (valid.sum(1) == ok.sum(1)) & (det > 1e-12 * sw * sw)
        u, v = np.where(enough, lines.u, np.nan), np.where(enough, lines.v, np.nan)
        pred = e[:, None] + np.exp(u[:, None] + v[:, None] * x)
        sse = np.where(ok, (np.log(y) - np.log(pred)) ** 2, 0.0).sum(1)
    return u, v, np.where(np.isfinite(sse), sse, np.inf)


def _profile_floor(x, y, ok):
    """Free E: the floor minimising the SSE of ln L, on a grid in [0, min L), refined once around the best."""
    s = y.shape[0]
    top = np.where(ok, y, np.inf).min(1)  # E must stay below every point
    lo, hi = np.zeros(s), top * (1.0 - 1e-6)
    best_e = np.full(s, np.nan)
    for _ in range(2):
        grid = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, _FLOOR_GRID)[None, :]  # (S, G)
        rows = np.repeat(np.arange(s), _FLOOR_GRID)
        _, _, sse = _line_given_floor(x[rows], y[rows], grid.ravel(), ok[rows])
        pick = np.argmin(sse.reshape(s, _FLOOR_GRID), axis=1)
        best_e = grid[np.arange(s), pick]
        step = (hi - lo) / (_FLOOR_GRID - 1)
        lo, hi = np.maximum(best_e - step, 0.0), np.minimum(best_e + step, top * (1.0 - 1e-6))
    enough = ok.sum(1) >= MIN_BUDGETS_FREE_FLOOR
    e = np.where(enough, best_e, np.nan)
    u, v, _ = _line_given_floor(x, y, np.where(enough, e, 0.0), ok)
    return _as_params(e, np.where(enough, u, np.nan), np.where(enough, v, np.nan))


def _as_params(e, u, v):
    """(E, ln C0, gamma) from the line z = u + v x: gamma = -v, ln C0 = u / gamma."""
    with np.errstate(all="ignore"):
        gamma = -v
        log_c0 = u / gamma
        bad = ~(np.isfinite(gamma) & (gamma > 0) & np.isfinite(log_c0))
    return e, np.where(bad, np.nan, log_c0), np.where(bad, np.nan, gamma)
