"""What a grid's own IsoFLOP minima say about a bigger budget, with no prior: the frontier's likelihood range.

The frontier L*(C) = E + (C0/C)^gamma (Kaplan et al. 2020, eq. 1.4, with the irreducible term of
Hoffmann et al. 2022, eq. 2) has three parameters, and a few budgets' minima hardly separate its floor
E from its exponent gamma: on a short span a high floor with a steep exponent and a low floor with a
shallow one pass through the same points and part ways beyond them. The range admitted at a target C
is the set of L*(C) over every (E, C0, gamma) whose fit to the minima is within the likelihood-ratio
bound of the best,

    SSE(E, C0, gamma) - min SSE <= chi2_1(level) sigma^2,

the profile-likelihood interval of the prediction (Wilks 1938; Pawitan 2001, "In All Likelihood",
sections 2.6 and 3.4), sigma being the minima's relative noise. Given E the frontier is the line
z = ln(L - E) = u + v ln C, and weighted least squares with weights ((L - E) / L)^2 makes its SSE the
SSE of ln L to first order (:mod:`raylm.scaling.fit.frontier`), so the lines admitted at that E form
an ellipse around the fitted one: at x = ln C their z spans z_hat +- sqrt((bound - SSE(E)) h(x)),
h(x) = (1, x) (X'WX)^-1 (1, x)' (the prediction variance factor of linear regression). E runs over a
grid in [0, min L); a decreasing frontier never rises above the lowest minimum, which caps the range.
With two budgets every floor passes (two points fix a curve for any floor). A prediction that claims
less than this range relies on something besides the minima: a pinned exponent or floor, the law
through every run, or the calibration on public ladders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from raylm.scaling.fit.frontier import floor_lines

ADMITTED_LEVEL = 0.95
_FLOORS = 800  # floors on the profile grid in [0, min L)


@dataclass(frozen=True)
class AdmittedRange:
    """The losses (``low``, ``high``) per target that the minima admit, the floors behind them and the inputs."""

    targets: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    floors: tuple[float, float]
    budgets: int
    sigma: float
    level: float

    def as_dict(self) -> dict:
        return {"targets": list(self.targets), "low": list(self.low), "high": list(self.high),
                "floors": list(self.floors), "budgets": self.budgets, "sigma": self.sigma, "level": self.level,
                "method": "profile likelihood of the prediction of the frontier E + (C0/C)^gamma through "
                          f"the IsoFLOP minima: every (E, C0, gamma) with SSE - min SSE <= chi2_1({self.level:g}) "
                          "sigma^2 (raylm.scaling.fit.admitted)"}


def admitted_range(budgets, minima, targets, sigma: float, level: float = ADMITTED_LEVEL) -> AdmittedRange | None:
    """The :class:`AdmittedRange` of the module docstring at ``targets`` (FLOPs); ``sigma`` is the relative noise
    of the ``minima`` (e.g. the run noise). None with fewer than two distinct budgets, a sigma that is not
    positive and finite, or no decreasing frontier through the minima."""
    c, y = np.asarray(budgets, dtype=float), np.asarray(minima, dtype=float)
    t = np.atleast_1d(np.asarray(targets, dtype=float))
    if np.unique(c).size < 2 or not (np.isfinite(sigma) and sigma > 0) or not np.all(y > 0):
        return None
    floors = np.linspace(0.0, y.min() * (1.0 - 1e-6), _FLOORS)
    lines = _lines_given_floors(np.log(c), y, floors)
    fits = np.isfinite(lines.sse) & (lines.v < 0)
    if not fits.any():
        return None
    room = lines.sse[fits].min() + chi2.ppf(level, 1) * sigma ** 2 - lines.sse  # per floor, >= 0 where admitted
    keep = fits & (room >= 0)
    x = np.log(t)[None, :]
    z_hat = lines.u[keep, None] + lines.v[keep, None] * x
    h = lines.h00[keep, None] + 2.0 * lines.h01[keep, None] * x + lines.h11[keep, None] * x * x
    half = np.sqrt(np.maximum(room[keep, None] * h, 0.0))
    e = floors[keep, None]
    with np.errstate(over="ignore"):  # a far target's upper lines overflow; the lowest minimum caps them
        low = (e + np.exp(z_hat - half)).min(0)
        high = np.minimum((e + np.exp(z_hat + half)).max(0), y.min())
    return AdmittedRange(tuple(t.tolist()), tuple(low.tolist()), tuple(high.tolist()),
                         (float(floors[keep].min()), float(floors[keep].max())), int(np.unique(c).size),
                         float(sigma), level)


@dataclass(frozen=True)
class _Lines:
    """Per floor: the weighted least-squares line z = u + v x, its weighted SSE and (X'WX)^-1 = [[h00, h01],
    [h01, h11]]."""

    u: np.ndarray
    v: np.ndarray
    sse: np.ndarray
    h00: np.ndarray
    h01: np.ndarray
    h11: np.ndarray


def _lines_given_floors(x: np.ndarray, y: np.ndarray, floors: np.ndarray) -> _Lines:
    shape = (floors.size, x.size)
    xs = np.broadcast_to(x, shape)
    fit = floor_lines(xs, np.broadcast_to(y, shape), floors, np.ones(shape, dtype=bool))
    with np.errstate(all="ignore"):
        sse = (fit.w * (fit.z - fit.u[:, None] - fit.v[:, None] * xs) ** 2).sum(1)
    ok = fit.valid.all(1) & (fit.det > 1e-12 * fit.sw * fit.sw)
    nan = np.full(floors.size, np.nan)
    with np.errstate(all="ignore"):
        return _Lines(np.where(ok, fit.u, nan), np.where(ok, fit.v, nan), np.where(ok, sse, np.inf),
                      np.where(ok, fit.sxx / fit.det, nan), np.where(ok, -fit.sx / fit.det, nan),
                      np.where(ok, fit.sw / fit.det, nan))
