"""What a grid's own IsoFLOP minima say about a bigger budget, with no prior: the frontier's profile range.

The frontier L*(C) = E + (C0/C)^gamma (Kaplan et al. 2020, eq. 1.4, with the irreducible term of
Hoffmann et al. 2022, eq. 2) has three parameters, and a few budgets' minima hardly separate its floor
E from its exponent gamma: on a short span a high floor with a steep exponent and a low floor with a
shallow one pass through the same points and part ways beyond them. Profile it over its floor: for
each E in [0, min L), the least-squares (C0, gamma) through the minima (:func:`frontier_given_floors`)
leaves SSE(E) in ln L. Every E with

    SSE(E) - min_E SSE(E) <= chi2_1(level) sigma^2

is admitted (the profile-likelihood region of Wilks 1938; Pawitan 2001, "In All Likelihood", section
2.6 and 3.4), sigma being the minima's relative noise, and the range of the admitted frontiers' losses
at a target is what the minima alone admit there. With two budgets every floor passes (two points fix
a curve for any floor). A prediction that claims more than this range relies on something besides the
minima: a pinned exponent or floor, the law through every run, or the calibration on public ladders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from raylm.scaling.fit.frontier import frontier_given_floors

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
                "method": "profile likelihood of the frontier E + (C0/C)^gamma through the IsoFLOP minima over "
                          f"its floor: every E with SSE(E) - min SSE <= chi2_1({self.level:g}) sigma^2 "
                          "(raylm.scaling.fit.admitted)"}

    def describe(self, index: int) -> str:
        return (f"the {self.budgets} IsoFLOP minima alone admit {self.low[index]:.4g}-{self.high[index]:.4g} "
                f"(any floor {self.floors[0]:.3g}-{self.floors[1]:.3g}, {self.level:.0%} profile likelihood, "
                f"minima noise {self.sigma:.2%})")


def admitted_range(budgets, minima, targets, sigma: float, level: float = ADMITTED_LEVEL) -> AdmittedRange | None:
    """The :class:`AdmittedRange` of the module docstring at ``targets`` (FLOPs); ``sigma`` is the relative noise
    of the ``minima`` (e.g. the run noise). None with fewer than two distinct budgets, a sigma that is not
    positive and finite, or no decreasing frontier through the minima."""
    c, y = np.asarray(budgets, dtype=float), np.asarray(minima, dtype=float)
    t = np.atleast_1d(np.asarray(targets, dtype=float))
    if np.unique(c).size < 2 or not (np.isfinite(sigma) and sigma > 0) or not np.all(y > 0):
        return None
    floors = np.linspace(0.0, y.min() * (1.0 - 1e-6), _FLOORS)
    u, v, sse = frontier_given_floors(c, y, floors)
    fits = np.isfinite(u) & np.isfinite(v) & (v < 0) & np.isfinite(sse)
    if not fits.any():
        return None
    keep = fits & (sse - sse[fits].min() <= chi2.ppf(level, 1) * sigma ** 2)
    losses = floors[keep, None] + np.exp(u[keep, None] + v[keep, None] * np.log(t)[None, :])
    return AdmittedRange(tuple(t.tolist()), tuple(losses.min(0).tolist()), tuple(losses.max(0).tolist()),
                         (float(floors[keep].min()), float(floors[keep].max())), int(np.unique(c).size),
                         float(sigma), level)
