"""Backtests: predictions scored on budgets the fit did not see.

- :mod:`~raylm.scaling.backtest.largest_budget`: the largest budget held out, every predictor;
- :mod:`~raylm.scaling.backtest.leave_future_out`: fit up to each cut, predict every later budget;
- :mod:`~raylm.scaling.backtest.ladder`: whole public ladders, per predictor and ratio bucket.
"""
