"""Bootstrap summaries of the Approach 3 parameters: standard errors and percentile intervals.

Besiroglu et al. (2024), section 3, refit 4,000 resamples of the points to get standard errors of
E, A, B, alpha, beta and intervals of the compute-optimal exponents a = beta/(alpha+beta) and
b = alpha/(alpha+beta) (Hoffmann et al. 2022, eq. 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

QUANTITIES = ("E", "A", "B", "alpha", "beta", "a", "b")


@dataclass(frozen=True)
class BootstrapSummary:
    """Refit parameters of each resample as rows (a, b, e, alpha, beta) of log-parameters."""

    samples: np.ndarray = field(repr=False)
    level: float
    n_resamples: int
    seed: int

    @property
    def n_ok(self) -> int:
        return int(self.samples.shape[0])

    def values(self) -> dict[str, np.ndarray]:
        """Every quantity of :data:`QUANTITIES` per resample."""
        log_a, log_b, log_e, alpha, beta = self.samples.T
        with np.errstate(all="ignore"):
            total = alpha + beta
            return {"E": np.exp(log_e), "A": np.exp(log_a), "B": np.exp(log_b), "alpha": alpha, "beta": beta,
                    "a": beta / total, "b": alpha / total}

    def stderr(self) -> dict[str, float]:
        """Standard deviation across resamples (ddof=1) of each quantity."""
        return {k: _std(v) for k, v in self.values().items()}

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Central percentile interval at ``level`` (e.g. 2.5th and 97.5th percentiles for 0.95)."""
        return {k: percentile_interval(v, self.level) for k, v in self.values().items()}

    def as_dict(self) -> dict:
        return {"resamples": self.n_resamples, "succeeded": self.n_ok, "seed": self.seed, "level": self.level,
                "stderr": self.stderr(), "intervals": {k: list(v) for k, v in self.intervals().items()}}


def percentile_interval(values: np.ndarray, level: float, axis: int = 0):
    """(lower, upper) central percentile interval of the finite ``values`` along ``axis``."""
    tail = 50.0 * (1.0 - level)
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            return (float("nan"), float("nan"))
        lo, hi = np.percentile(arr, [tail, 100.0 - tail])
        return (float(lo), float(hi))
    lo, hi = np.nanpercentile(arr, [tail, 100.0 - tail], axis=axis)
    return lo, hi


def _std(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")
