"""Compute-optimal predictions for target budgets from both approaches, with intervals.

Approach 3 (Hoffmann et al. 2022, eq. 4): N*(C), D*(C) and L(N*, D*) from the fitted law;
intervals are percentiles over the bootstrap refits (Besiroglu et al. 2024, section 3).
Approach 2 (Hoffmann et al. 2022, section 3.2): N* = k_N C^a, D* = k_D C^b; intervals are
bootstrap percentiles when resampled, else t-based confidence bands of the log-log fit.
Approach 2 has no loss law of its own; its ``loss`` is the Approach 3 law at its allocation.
"""

from __future__ import annotations

import numpy as np

from raylm.errors import UserError
from raylm.scaling.fit.approach2 import Approach2Fit
from raylm.scaling.fit.approach3 import Approach3Fit
from raylm.scaling.fit.bootstrap import percentile_interval
from raylm.scaling.laws import FLOPS_PER_PARAM_TOKEN
from raylm.scaling.predict.prediction import NAN_PAIR, Prediction


def parse_budgets(values) -> list[float]:
    """Budgets from the command line: numbers or strings such as '1e21' and '1e21,3e21'; raises
    :class:`UserError`. Parsed once, at the edge; everything past it takes :func:`checked_budgets`."""
    return checked_budgets([part.strip() for value in values or [] for part in str(value).split(",") if part.strip()])


def checked_budgets(values) -> list[float]:
    """FLOPs as positive finite floats (a number or a sequence); raises :class:`UserError` otherwise."""
    out: list[float] = []
    for value in np.ravel(np.asarray(values if values is not None else [], dtype=object)).tolist():
        try:
            budget = float(value)
        except (TypeError, ValueError):
            raise UserError(f"budget {value!r} is not a number (write FLOPs such as 1e21)") from None
        if not (np.isfinite(budget) and budget > 0):
            raise UserError(f"budget must be positive and finite, got {value}")
        out.append(budget)
    return out


def predict_approach3(fit: Approach3Fit, targets) -> list[Prediction]:
    """N*, D*, L* at each budget from the fitted law, with bootstrap percentile intervals when available."""
    c = np.asarray(targets, dtype=float)
    law = fit.law
    n_opt, d_opt, loss = law.optimal_params(c), law.optimal_tokens(c), law.optimal_loss(c)
    level = fit.bootstrap.level if fit.bootstrap else 0.95
    bands = bootstrap_bands(fit, c) if fit.bootstrap is not None else None
    out = []
    for i, budget in enumerate(c):
        band = {k: (float(v[0][i]), float(v[1][i])) for k, v in bands.items()} if bands else {}
        out.append(Prediction("approach3", float(budget), float(np.atleast_1d(n_opt)[i]),
                              float(np.atleast_1d(d_opt)[i]), float(np.atleast_1d(loss)[i]), level,
                              loss_interval=band.get("loss", NAN_PAIR), n_opt_interval=band.get("n_opt", NAN_PAIR),
                              d_opt_interval=band.get("d_opt", NAN_PAIR)))
    return out


def predict_approach2(fit: Approach2Fit, targets, approach3: Approach3Fit | None = None) -> list[Prediction]:
    """N* = k_N C^a and D* = k_D C^b; loss from the Approach 3 law when given."""
    c = np.asarray(targets, dtype=float)
    n_opt, d_opt = fit.n_opt_law(c), fit.d_opt_law(c)
    boot = fit.bootstrap_predictions(c)
    if boot is not None:
        n_band = percentile_interval(boot[0], fit.level, axis=0)
        d_band = percentile_interval(boot[1], fit.level, axis=0)
    else:
        n_band = fit.n_opt_law.confidence_band(c, fit.level)
        d_band = fit.d_opt_law.confidence_band(c, fit.level)
    loss = approach3.law.loss(n_opt, d_opt) if approach3 is not None else None
    return [
        Prediction("approach2", float(budget), float(n_opt[i]), float(d_opt[i]),
                   None if loss is None else float(loss[i]), fit.level,
                   n_opt_interval=(float(n_band[0][i]), float(n_band[1][i])),
                   d_opt_interval=(float(d_band[0][i]), float(d_band[1][i])))
        for i, budget in enumerate(c)
    ]


def predict(targets, approach3: Approach3Fit | None = None, approach2: Approach2Fit | None = None) -> list[Prediction]:
    """Predictions of every available approach for every budget (FLOPs; Approach 3 first)."""
    targets = checked_budgets(targets)
    out: list[Prediction] = []
    if approach3 is not None and targets:
        out += predict_approach3(approach3, targets)
    if approach2 is not None and targets:
        out += predict_approach2(approach2, targets, approach3)
    return out


def bootstrap_bands(fit: Approach3Fit, c: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Percentile bands of N*, D*, L* over the bootstrap laws (closed form of eq. 4, vectorised)."""
    v = fit.bootstrap.values()
    alpha, beta, big_a, big_b, big_e = (v[k][:, None] for k in ("alpha", "beta", "A", "B", "E"))
    with np.errstate(all="ignore"):
        g = (alpha * big_a / (beta * big_b)) ** (1.0 / (alpha + beta))
        n_opt = g * (c / FLOPS_PER_PARAM_TOKEN) ** (beta / (alpha + beta))
        d_opt = c / FLOPS_PER_PARAM_TOKEN / n_opt
        loss = big_e + big_a / n_opt**alpha + big_b / d_opt**beta
        valid = (alpha > 0) & (beta > 0)
    level = fit.bootstrap.level
    return {name: percentile_interval(np.where(valid, arr, np.nan), level, axis=0)
            for name, arr in (("n_opt", n_opt), ("d_opt", d_opt), ("loss", loss))}
