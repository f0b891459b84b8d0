"""The standard deviation of a fit's residuals over its degrees of freedom, s = sqrt(sum r^2 / dof).

The unbiased estimate of the noise variance of a least-squares fit with dof = n - p (p fitted
parameters; e.g. Seber & Lee 2003, "Linear Regression Analysis", section 3.3). Used for the run
noise behind the simulated intervals and for the law's misfit in the calibrated ones.
"""

from __future__ import annotations

import numpy as np


def residual_sigma(residuals, dof: int) -> float:
    """sqrt(sum r^2 / dof); nan when ``dof`` < 1 or a residual is not finite."""
    r = np.asarray(residuals, dtype=float)
    if dof < 1 or not np.all(np.isfinite(r)):
        return float("nan")
    return float(np.sqrt(r @ r / dof))
