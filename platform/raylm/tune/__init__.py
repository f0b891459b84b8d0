"""Ray Tune on top of Ray Train: the driver session, the one trial runner, search spaces and sweeps.

:mod:`~raylm.tune.session` sets a driver up once (plan, Ray, concurrency, data, tracking writer)
for sweeps and studies; :mod:`~raylm.tune.context` is what each trial gets from it;
:mod:`~raylm.tune.trial` runs one trial (one TorchTrainer run); :mod:`~raylm.tune.sweep` and
:mod:`~raylm.tune.batch` run searches and fixed lists of trials.
"""
