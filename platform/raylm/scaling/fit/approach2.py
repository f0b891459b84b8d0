"""Approach 2: IsoFLOP profiles (Hoffmann et al. 2022, section 3.2).

For each compute budget C, fit a parabola of the final loss in log N and take its minimum N*(C);
then fit the power laws N* = k_N C^a and D* = k_D C^b by least squares in log-log space
(their Figure 3 and Table 2). D* = C / (6 N*), so b = 1 - a exactly.

Runs are grouped into budgets by their compute (:func:`group_budgets`): around given nominal
budgets, or greedily within a factor (1 + tolerance)^2 when none are given. A budget is used
when it has at least 3 model sizes, a convex parabola and its minimum inside the sampled sizes
(a minimum outside is an extrapolation of the parabola, not a measurement).

Intervals: t-based confidence intervals of the least-squares exponents, and, with ``bootstrap``
resamples, percentile intervals from resampling the runs within each budget (integer weights),
refitting every parabola and both power laws.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from raylm.errors import UserError
from raylm.scaling.data import ScalingData
from raylm.scaling.fit.bootstrap import percentile_interval
from raylm.scaling.laws import FLOPS_PER_PARAM_TOKEN

MIN_RUNS_PER_BUDGET = 3  # a parabola has three coefficients


@dataclass(frozen=True)
class IsoFlopSlice:
    """The runs of one budget, their parabola loss = c2 x^2 + c1 x + c0 (x = ln N) and its minimum."""

    budget: float
    params: np.ndarray = field(repr=False)
    loss: np.ndarray = field(repr=False)
    coeffs: tuple[float, float, float] | None
    n_opt: float | None
    loss_opt: float | None
    note: str = ""  # why the slice is not used

    @property
    def used(self) -> bool:
        return self.n_opt is not None

    @property
    def d_opt(self) -> float | None:
        return None if self.n_opt is None else self.budget / (FLOPS_PER_PARAM_TOKEN * self.n_opt)


@dataclass(frozen=True)
class PowerLaw:
    """y = exp(intercept) x^exponent, fitted by ordinary least squares of ln y on ln x."""

    exponent: float
    intercept: float
    stderr_exponent: float
    stderr_intercept: float
    dof: int
    cov: np.ndarray = field(repr=False)

    def __call__(self, x):
        return np.exp(self.intercept) * np.asarray(x, dtype=float) ** self.exponent

    def exponent_interval(self, level: float) -> tuple[float, float]:
        half = _t_quantile(level, self.dof) * self.stderr_exponent
        return (self.exponent - half, self.exponent + half)

    def confidence_band(self, x, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Confidence interval of the fitted line (not a prediction interval) at ``x``."""
        lx = np.log(np.asarray(x, dtype=float))
        design = np.stack([np.ones_like(lx), lx], axis=-1)
        se = np.sqrt(np.einsum("...i,ij,...j->...", design, self.cov, design))
        centre = self.intercept + self.exponent * lx
        half = _t_quantile(level, self.dof) * se
        return np.exp(centre - half), np.exp(centre + half)


@dataclass(frozen=True)
class Approach2Fit:
    slices: list[IsoFlopSlice]
    n_opt_law: PowerLaw
    d_opt_law: PowerLaw
    level: float
    bootstrap_samples: np.ndarray | None = field(default=None, repr=False)  # (R, 4): a, ln k_N, b, ln k_D

    @property
    def a(self) -> float:
        return self.n_opt_law.exponent

    @property
    def b(self) -> float:
        return self.d_opt_law.exponent

    def bootstrap_predictions(self, budgets) -> tuple[np.ndarray, np.ndarray] | None:
        """N*(C) and D*(C) for each bootstrap resample, shapes (R, len(budgets))."""
        if self.bootstrap_samples is None:
            return None
        lc = np.log(np.atleast_1d(np.asarray(budgets, dtype=float)))
        s = self.bootstrap_samples
        return np.exp(s[:, 1:2] + s[:, 0:1] * lc), np.exp(s[:, 3:4] + s[:, 2:3] * lc)

    def as_dict(self) -> dict:
        out = {"a": self.a, "b": self.b, "k_N": float(np.exp(self.n_opt_law.intercept)),
               "k_D": float(np.exp(self.d_opt_law.intercept)), "level": self.level,
               "stderr": {"a": self.n_opt_law.stderr_exponent, "b": self.d_opt_law.stderr_exponent},
               "intervals": {"a": list(self.n_opt_law.exponent_interval(self.level)),
                             "b": list(self.d_opt_law.exponent_interval(self.level))},
               "budgets": [_slice_dict(s) for s in self.slices]}
        if self.bootstrap_samples is not None:
            s = self.bootstrap_samples
            out["bootstrap"] = {"resamples_ok": int(s.shape[0]),
                                "stderr": {"a": float(np.std(s[:, 0], ddof=1)), "b": float(np.std(s[:, 2], ddof=1))},
                                "intervals": {"a": list(percentile_interval(s[:, 0], self.level)),
                                              "b": list(percentile_interval(s[:, 2], self.level))}}
        return out


class Approach2Unavailable(ValueError):
    """The data do not hold enough IsoFLOP profiles for Approach 2 (not a user error: Approach 3 may still fit)."""


def group_budgets(flops: np.ndarray, budgets=None, tolerance: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """(label per run, -1 for none; budget per label).

    With ``budgets``, each run joins the nearest one within a factor ``1 + tolerance``. Without, sorted
    runs are grouped greedily: a group takes every run within ``(1 + tolerance)^2`` of its smallest
    compute, and its budget is the geometric mean of its runs' compute.
    """
    lc = np.log(np.asarray(flops, dtype=float))
    width = np.log1p(tolerance)
    if budgets is not None:
        centres = np.log(np.asarray(sorted(budgets), dtype=float))
        dist = np.abs(lc[:, None] - centres[None, :])
        labels = np.where(dist.min(axis=1) <= width, dist.argmin(axis=1), -1)
        return labels, np.exp(centres)
    labels = np.full(lc.size, -1)
    order = np.argsort(lc)
    group, start = -1, -np.inf
    for i in order:
        if lc[i] > start + 2 * width:
            group, start = group + 1, lc[i]
        labels[i] = group
    return labels, np.array([np.exp(lc[labels == k].mean()) for k in range(group + 1)])


def fit_approach2(
    data: ScalingData, *, level: float = 0.95, bootstrap: int = 0, seed: int = 0, budgets=None,
    tolerance: float = 0.15,
) -> Approach2Fit:
    """IsoFLOP parabolas, their minima and the power laws N*(C), D*(C); see the module docstring."""
    if not (np.isfinite(tolerance) and tolerance > 0):
        raise UserError(f"the IsoFLOP budget tolerance must be positive, got {tolerance}")
    if not 0 < level < 1:
        raise UserError(f"interval level must be between 0 and 1, got {level}")
    labels, budgets = group_budgets(data.flops, budgets, tolerance)
    slices = [_fit_slice(budgets[k], data.params[labels == k], data.loss[labels == k]) for k in range(len(budgets))]
    used = [s for s in slices if s.used]
    if len(used) < 2:
        notes = "; ".join(f"C={s.budget:.3g}: {s.note}" for s in slices if not s.used) or "none"
        raise Approach2Unavailable(
            f"Approach 2 needs at least 2 budgets with {MIN_RUNS_PER_BUDGET}+ model sizes and a convex loss "
            f"profile; found {len(used)} of {len(slices)} budget(s) (skipped: {notes})"
        )
    c = np.array([s.budget for s in used])
    n_law = fit_power_law(c, np.array([s.n_opt for s in used]))
    d_law = fit_power_law(c, np.array([s.d_opt for s in used]))
    samples = _bootstrap(data, labels, budgets, used, bootstrap, seed) if bootstrap else None
    return Approach2Fit(slices=slices, n_opt_law=n_law, d_opt_law=d_law, level=level, bootstrap_samples=samples)


def fit_power_law(x: np.ndarray, y: np.ndarray) -> PowerLaw:
    """Least squares of ln y = intercept + exponent ln x, with standard errors (nan with 2 points)."""
    lx, ly = np.log(x), np.log(y)
    design = np.stack([np.ones_like(lx), lx], axis=1)
    coef, *_ = np.linalg.lstsq(design, ly, rcond=None)
    dof = len(lx) - 2
    resid = ly - design @ coef
    sigma2 = float(resid @ resid / dof) if dof > 0 else float("nan")
    cov = sigma2 * np.linalg.inv(design.T @ design)
    return PowerLaw(exponent=float(coef[1]), intercept=float(coef[0]), stderr_exponent=float(np.sqrt(cov[1, 1])),
                    stderr_intercept=float(np.sqrt(cov[0, 0])), dof=dof, cov=cov)


def _fit_slice(budget: float, params: np.ndarray, loss: np.ndarray) -> IsoFlopSlice:
    sizes = np.unique(params).size
    if sizes < MIN_RUNS_PER_BUDGET:
        return IsoFlopSlice(budget, params, loss, None, None, None, f"{sizes} distinct model size(s)")
    c2, c1, c0 = np.polyfit(np.log(params), loss, 2)
    if not c2 > 0:
        return IsoFlopSlice(budget, params, loss, (c2, c1, c0), None, None, "loss profile is not convex")
    x_opt = -c1 / (2 * c2)
    coeffs = (float(c2), float(c1), float(c0))
    if not np.log(params.min()) <= x_opt <= np.log(params.max()):
        return IsoFlopSlice(budget, params, loss, coeffs, None, None, "parabola minimum outside the sampled sizes")
    return IsoFlopSlice(budget, params, loss, coeffs, float(np.exp(x_opt)), float(c0 - c1 * c1 / (4 * c2)))


def _bootstrap(data, labels, budgets, used, n_resamples: int, seed: int) -> np.ndarray:
    """Resample runs within each used budget; weighted parabolas and power laws, all resamples at once."""
    rng = np.random.default_rng(seed)
    keep = {s.budget for s in used}
    log_c, log_n_opt = [], []
    for k, budget in enumerate(budgets):
        if budget not in keep:
            continue
        mask = labels == k
        x, y = np.log(data.params[mask]), data.loss[mask]
        w = rng.multinomial(x.size, np.full(x.size, 1.0 / x.size), size=n_resamples).astype(float)
        design = np.stack([x * x, x, np.ones_like(x)], axis=1)  # (m, 3)
        lhs = np.einsum("rm,mi,mj->rij", w, design, design)
        rhs = np.einsum("rm,mi,m->ri", w, design, y)
        with np.errstate(all="ignore"):
            sol = np.linalg.solve(lhs + 1e-12 * np.eye(3), rhs[..., None])[..., 0]
            x_opt = np.where(sol[:, 0] > 0, -sol[:, 1] / (2 * sol[:, 0]), np.nan)
        sizes = np.unique(x, return_inverse=True)[1]
        distinct = ((w @ np.eye(sizes.max() + 1)[sizes]) > 0).sum(axis=1)  # distinct sizes drawn
        x_opt[distinct < MIN_RUNS_PER_BUDGET] = np.nan
        log_c.append(np.log(budget))
        log_n_opt.append(x_opt)
    lc = np.array(log_c)
    ln = np.stack(log_n_opt, axis=1)  # (R, budgets)
    ok = np.all(np.isfinite(ln), axis=1)
    ln, ld = ln[ok], lc - np.log(FLOPS_PER_PARAM_TOKEN) - ln[ok]
    lc_c = lc - lc.mean()
    a = (ln - ln.mean(1, keepdims=True)) @ lc_c / (lc_c @ lc_c)
    b = (ld - ld.mean(1, keepdims=True)) @ lc_c / (lc_c @ lc_c)
    return np.stack([a, ln.mean(1) - a * lc.mean(), b, ld.mean(1) - b * lc.mean()], axis=1)


def _t_quantile(level: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, dof)) if dof > 0 else float("nan")


def _slice_dict(s: IsoFlopSlice) -> dict:
    return {"budget": s.budget, "runs": int(s.params.size), "n_opt": s.n_opt, "d_opt": s.d_opt,
            "loss_opt": s.loss_opt, "note": s.note}
