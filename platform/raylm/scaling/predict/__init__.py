"""Predictions for larger budgets: N*, D* and the loss, one type for all (:mod:`~raylm.scaling.predict.prediction`).

- :mod:`~raylm.scaling.predict.approaches`: Approaches 2 and 3 in closed form, with bootstrap bands;
- :mod:`~raylm.scaling.predict.predictors`: every predictor as an array program over rows;
- :mod:`~raylm.scaling.predict.pointfit`: every predictor fitted once to the measured data;
- :mod:`~raylm.scaling.predict.stacking`: the rule that combines them from their own backtests;
- :mod:`~raylm.scaling.predict.recommend`: one call from a finished grid to the recommended prediction.
"""
