"""A fixed list of training runs as Tune trials, a few at a time: a study's grid points and its
verification runs. Each trial is one run of :func:`raylm.tune.trial.run_trial`."""

from __future__ import annotations

import time
from pathlib import Path

from raylm.tune.context import TrialContext
from raylm.tune.session import trainable, trial_failures


def run_fixed_trials(points: list[dict], context: TrialContext, parallel_trials: int, storage: Path, name: str,
                     max_failures: int = 1, callbacks: list | None = None):
    """Run every entry of ``points`` (``{"overrides": ..., "tags": ...}``) to the end; a failed trial is
    re-run up to ``max_failures`` times; ``callbacks``: Tune callbacks on the driver. Returns Tune's
    ResultGrid (errors are in it, not raised)."""
    import ray.tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from raylm.tune.trial import POINT_KEY

    tuner = ray.tune.Tuner(
        trainable(context),
        param_space={POINT_KEY: ray.tune.grid_search(points)},
        tune_config=ray.tune.TuneConfig(search_alg=BasicVariantGenerator(max_concurrent=parallel_trials),
                                        reuse_actors=context.in_process),
        run_config=ray.tune.RunConfig(name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(storage), verbose=1,
                                      failure_config=ray.tune.FailureConfig(
                                          max_failures=trial_failures(max_failures, context)),
                                      callbacks=callbacks),
    )
    return tuner.fit()
