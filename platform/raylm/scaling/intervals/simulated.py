"""Prediction intervals for extrapolated losses: a parametric bootstrap that includes the run noise.

Why not the percentile bootstrap of the points (Besiroglu et al. 2024, section 3)? With 15 runs and a
five-parameter law, resampling runs with replacement drops whole model sizes from budgets, and the
spread of refits around the fit says nothing about how far the fit itself sits from the truth: in
our synthetic studies its 90% intervals covered the true optimal loss far less than 90% of the time
(docs/scaling.md). Instead (Efron & Tibshirani 1993, chapter 6.5 and 12: the parametric bootstrap and
the bootstrap-t/"basic" interval; Davison & Hinkley 1997, section 2.4):

1. Noise: run-to-run noise is multiplicative, ln L_i = ln L(N_i, D_i) + sigma eps_i. sigma is
   given (measured from repeated seeds), or estimated from the Approach 3 residuals,
   s^2 = sum r_i^2 / (n - 5) (five fitted parameters): a law that misfits inflates s, and the intervals
   widen with it (on data the law cannot fit this kept twice the coverage of the alternative, the
   residuals of each budget's IsoFLOP parabola, s^2 = sum r^2 / sum_k (m_k - 3), also offered).
2. Simulate: S data sets from the fitted law at the measured (N, D): ln L*_i = ln L_hat_i + sigma_s eps.
   With an estimated s, each data set draws its own sigma_s^2 = s^2 dof / chi2_dof (the posterior of
   sigma^2 under the reference prior; this turns z-intervals into t-like ones for few residual degrees
   of freedom). Training curves get one factor exp(sigma_s eps_run) per run (a seed moves a whole curve).
3. Refit every predictor on every data set, the same procedure as on the data.
4. Pivot: the error of each refit against the simulated world's truth, delta_s = ln L_hat_s - ln L_world
   (L_world: the fitted law's optimal loss at the target; for Approach 1, whose curves are not simulated
   from the law, its own estimate). The interval is [L_hat e^(-q_hi), L_hat e^(-q_lo)] with q the
   (1 -+ level)/2 quantiles of delta: it carries the bias and the skew of the extrapolation, not only
   its spread. ``run_interval`` adds one more run's noise: where a single verification run's measured
   loss should fall.
5. Check the noise model against the held-out budget: every simulated data set is backtested exactly
   as the data were (largest budget held out, refit, predict its best loss). If the real backtest error
   lies beyond one standard deviation of the simulated ones (outside their central 68.3% range,
   :data:`CHECK_LEVEL`), the law or the noise model is wrong by more than the simulation knows (e.g.
   Approach 3's law on data it cannot fit); the predictor's errors are then widened about their median
   by k = (observed - median) / (edge - median), the factor that puts the held-out budget back on the
   edge: the excess is taken as model error of the same shape. With a correct model about a third of
   the studies are widened, mostly a little; with a wrong one it recovers part of the coverage (the
   measured numbers are in docs/scaling.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from raylm.errors import UserError
from raylm.scaling.fit.objective import N_PARAMS
from raylm.scaling.residuals import residual_sigma

CHECK_LEVEL = 0.6827  # central range of +-1 standard deviation of a normal distribution


@dataclass(frozen=True)
class NoiseEstimate:
    """Run-to-run noise sigma of ln L, its degrees of freedom (None when given) and where it came from."""

    sigma: float
    dof: int | None
    source: str

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """sigma per simulated data set: fixed when given, else from the scaled inverse chi-square posterior."""
        if self.dof is None:
            return np.full(size, self.sigma)
        return self.sigma * np.sqrt(self.dof / rng.chisquare(self.dof, size))

    def as_dict(self) -> dict:
        return {"sigma": self.sigma, "dof": self.dof, "source": self.source}


def estimate_noise(law_residuals: np.ndarray, isoflop: tuple[np.ndarray, int] | None = None,
                   noise: float | None = None, min_isoflop_dof: int = 2) -> NoiseEstimate:
    """The run noise sigma of ln L: ``noise`` when given, else from residuals (module docstring, step 1).

    ``isoflop`` = (residuals of ln L from each budget's parabola, their degrees of freedom sum(m_k - 3)):
    used instead of the Approach 3 residuals ``law_residuals`` (n - 5 degrees of freedom) when given
    with ``min_isoflop_dof`` or more.
    """
    if noise is not None:
        if not (np.isfinite(noise) and noise > 0):
            raise UserError(f"run noise must be a positive relative standard deviation (e.g. 0.01), got {noise}")
        return NoiseEstimate(float(noise), None, "given")
    if isoflop is not None and isoflop[1] >= min_isoflop_dof and np.all(np.isfinite(isoflop[0])):
        resid, dof, source = np.asarray(isoflop[0]), int(isoflop[1]), "IsoFLOP parabola residuals"
    else:
        resid = np.asarray(law_residuals)
        dof, source = resid.size - N_PARAMS, "Approach 3 residuals"
    sigma = residual_sigma(resid, dof)
    if not np.isfinite(sigma):
        raise UserError(f"cannot estimate the run noise from {resid.size} runs and a {N_PARAMS}-parameter law; "
                        "give it (noise=..., e.g. from repeated seeds) or add runs")
    return NoiseEstimate(max(sigma, 1e-12), dof, source)


def simulate(log_fitted: np.ndarray, noise: NoiseEstimate, size: int, rng: np.random.Generator,
             n_curves: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(losses (S, n), curve factors (S, n_curves), sigma per data set (S,)) drawn around the fitted law."""
    sigma = noise.draw(rng, size)
    losses = np.exp(log_fitted[None, :] + sigma[:, None] * rng.standard_normal((size, log_fitted.size)))
    factors = np.exp(sigma[:, None] * rng.standard_normal((size, n_curves)))
    return losses, factors, sigma


@dataclass(frozen=True)
class PivotInterval:
    """Interval of the optimal loss and of one run's measured loss, with how many simulated refits made it."""

    loss: tuple[np.ndarray, np.ndarray]
    run: tuple[np.ndarray, np.ndarray]
    refits: np.ndarray  # finite refits per target


def backtest_scale(observed: float, simulated: np.ndarray, level: float = CHECK_LEVEL,
                   min_refits: int = 20) -> float:
    """k >= 1: how far the observed backtest error lies beyond the simulated ones (module docstring, step 5).

    ``observed``: ln(predicted / actual) of the real backtest; ``simulated``: the same for each simulated
    data set. Inside their central ``level`` range k = 1; beyond it, k = (observed - median) / (the range's
    edge - median) on that side, the factor that puts the observation back on the edge.
    """
    sims = np.asarray(simulated, dtype=float)
    sims = sims[np.isfinite(sims)]
    if sims.size < min_refits or not np.isfinite(observed):
        return 1.0
    tail = 50.0 * (1.0 - level)
    lo, med, hi = np.percentile(sims, [tail, 50.0, 100.0 - tail])
    if observed > hi and hi > med:
        return float((observed - med) / (hi - med))
    if observed < lo and lo < med:
        return float((med - observed) / (med - lo))
    return 1.0


def pivot_interval(estimate: np.ndarray, refits: np.ndarray, truth: np.ndarray, sigma: np.ndarray,
                   level: float, rng: np.random.Generator, scale: float = 1.0,
                   min_refits: int = 20) -> PivotInterval:
    """Basic bootstrap interval on the log scale (module docstring, steps 4-5); nan with too few finite refits.

    ``estimate`` (T,), ``refits`` (S, T), ``truth`` (T,) or (S, T), ``sigma`` (S,); ``scale`` widens the
    errors about their median (:func:`backtest_scale`).
    """
    with np.errstate(all="ignore"):
        delta = np.log(refits) - np.log(truth)
        if scale != 1.0:
            centre = _nanpercentile(delta, (50.0, 50.0))[0]
            delta = centre + scale * (delta - centre)
    run_delta = delta - sigma[:, None] * rng.standard_normal(delta.shape)  # L_run = L* e^(sigma eps)
    tail = 50.0 * (1.0 - level)
    count = np.isfinite(delta).sum(axis=0)

    def band(d):
        with np.errstate(all="ignore"):
            lo, hi = _nanpercentile(d, (tail, 100.0 - tail))
            low, high = estimate * np.exp(-hi), estimate * np.exp(-lo)
        short = count < min_refits
        return np.where(short, np.nan, low), np.where(short, np.nan, high)

    return PivotInterval(loss=band(delta), run=band(run_delta), refits=count)


def _nanpercentile(values: np.ndarray, q) -> tuple[np.ndarray, np.ndarray]:
    if values.shape[0] == 0 or not np.isfinite(values).any():
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns: nan, reported by the caller
        lo, hi = np.nanpercentile(values, q, axis=0)
    return lo, hi
