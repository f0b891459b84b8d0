"""Chinchilla-style scaling studies, the pure part: numbers in, numbers out.

- :mod:`~raylm.scaling.laws`: C = 6ND, the law L = E + A/N^alpha + B/D^beta, its compute-optimal allocation;
- :mod:`~raylm.scaling.data`, :mod:`~raylm.scaling.curves`: the measurements (final losses, training curves);
- :mod:`~raylm.scaling.isoflop`: IsoFLOP grids of model configs;
- :mod:`~raylm.scaling.fit`: the fits (Approaches 1, 2 and 3 of Hoffmann et al. 2022, the frontier);
- :mod:`~raylm.scaling.predict`: predictions for target budgets and the recommended one;
- :mod:`~raylm.scaling.intervals`: their intervals (simulated and calibrated);
- :mod:`~raylm.scaling.backtest`: predictions scored on budgets the fit did not see;
- :mod:`~raylm.scaling.fit_all`: all of it in one call; :mod:`~raylm.scaling.io` and
  :mod:`~raylm.scaling.plots` do the file work; :mod:`~raylm.scaling.synthetic` draws studies from a law.

Nothing here imports torch, Ray or MLflow (tests/unit/test_architecture.py): model counters come in
as parameters.
"""

from raylm.scaling.data import ScalingData
from raylm.scaling.fit.approach2 import Approach2Fit, Approach2Unavailable, fit_approach2
from raylm.scaling.fit.approach3 import Approach3Fit, fit_approach3, start_grid
from raylm.scaling.fit_all import FitReport, fit_scaling_laws
from raylm.scaling.isoflop import GridPoint, ModelFamily, isoflop_grid
from raylm.scaling.laws import (
    BESIROGLU_2024,
    HOFFMANN_2022,
    ChinchillaLaw,
    tokens_for_budget,
    tokens_per_param,
    training_flops,
    training_flops_with_attention,
)
from raylm.scaling.predict.approaches import predict
from raylm.scaling.predict.prediction import Prediction
from raylm.scaling.synthetic import synthetic_isoflop

__all__ = [
    "BESIROGLU_2024",
    "HOFFMANN_2022",
    "Approach2Fit",
    "Approach2Unavailable",
    "Approach3Fit",
    "ChinchillaLaw",
    "FitReport",
    "GridPoint",
    "ModelFamily",
    "Prediction",
    "ScalingData",
    "fit_approach2",
    "fit_approach3",
    "fit_scaling_laws",
    "isoflop_grid",
    "predict",
    "start_grid",
    "synthetic_isoflop",
    "tokens_for_budget",
    "tokens_per_param",
    "training_flops",
    "training_flops_with_attention",
]
