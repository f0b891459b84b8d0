"""A fixed list of training runs as Tune trials, a few at a time: a study's grid points and its
verification runs. Each trial is one run of :func:`raylm.tune.trial.run_trial`."""

from __future__ import annotations

import time
from pathlib import Path

from raylm.console import is_quiet
from raylm.tune.context import TrialContext
from raylm.tune.progress import TrialProgress, TrialView
from raylm.tune.session import trainable, trial_failures
from raylm.tune.trial import POINT_KEY


def run_fixed_trials(points: list[dict], context: TrialContext, parallel_trials: int, storage: Path, name: str,
                     max_failures: int = 1, callbacks: list | None = None, searcher=None):
    """Run every entry of ``points`` (``{"overrides": ..., "tags": ...}``) to the end; a failed trial is
    re-run up to ``max_failures`` times; ``callbacks``: Tune callbacks on the driver. ``searcher``: a Tune
    searcher that hands out ``points`` and may add more as results come (a study's sizes beyond an edge,
    :mod:`raylm.study.edges_beside`). Returns Tune's ResultGrid (errors are in it, not raised). The console
    shows :class:`TrialProgress` (Tune's own tables only with ``--verbose``)."""
    import ray.tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if searcher is None:
        space, search = {POINT_KEY: ray.tune.grid_search(points)}, BasicVariantGenerator(max_concurrent=parallel_trials)
        samples, limit = 1, None
    else:
        space, search, samples, limit = {}, searcher, -1, parallel_trials  # until the searcher says it is done
    tuner = ray.tune.Tuner(
        trainable(context),
        param_space=space,
        tune_config=ray.tune.TuneConfig(search_alg=search, num_samples=samples, max_concurrent_trials=limit,
                                        reuse_actors=context.in_process),
        run_config=ray.tune.RunConfig(name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(storage), verbose=0 if is_quiet() else 1,
                                      failure_config=ray.tune.FailureConfig(
                                          max_failures=trial_failures(max_failures, context)),
                                      callbacks=[*(callbacks or []), TrialProgress(
                                          point_view(), "val/loss", "min", total=len(points))]),
    )
    return tuner.fit()


def _point(trial) -> dict:
    return trial.config.get(POINT_KEY) or {}


def _point_label(trial) -> str:
    return _point(trial).get("tags", {}).get("run_name", trial.trial_id)


def _point_budget(trial) -> str:
    budget = _point(trial).get("tags", {}).get("raylm.budget")
    return f"C={float(budget):.2g}" if budget else ""


def _point_flops(trial) -> float:
    return float(_point(trial).get("tags", {}).get("raylm.flops", 1.0))


def _point_steps(trial) -> int | None:
    return _point(trial).get("overrides", {}).get("train.max_steps")


def point_view() -> TrialView:
    """A study's points in the live view: named by label, the best kept per budget, weighed by FLOPs."""
    return TrialView(label=_point_label, steps=_point_steps, work=_point_flops, group=_point_budget)
