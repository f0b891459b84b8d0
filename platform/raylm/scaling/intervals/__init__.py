"""Prediction intervals for extrapolated losses.

- :mod:`~raylm.scaling.intervals.simulated`: the parametric bootstrap with the run noise (the method);
- :mod:`~raylm.scaling.intervals.simulated_studies`: runs it for every predictor at once;
- :mod:`~raylm.scaling.intervals.calibrated`: split-conformal intervals calibrated on the public
  ladders' real extrapolation errors (table in ``calibration.json``).
"""
