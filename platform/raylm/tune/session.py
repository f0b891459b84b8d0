"""The driver's side of a sweep or study, set up once: plan -> connect -> concurrency -> data -> tracking writer.

:class:`DriverSession` checks the base run's parallel plan (before Ray starts), connects to Ray,
decides how many trials run at once, prepares the token shards every trial reuses, and starts the
tracking writer; leaving it stops the writer. :class:`TrialContext` is what each trial needs from
its driver, typed and picklable (it travels to the Tune trial actors); :func:`fit_trials` runs
trials through :func:`raylm.tune.trial.run_trial` with the settings every sweep and study share.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from raylm.config import RunConfig
from raylm.errors import UserError
from raylm.tune.context import TrialContext

STATE_SAVE_SECONDS = 2
TRIAL_DRIVER_MEMORY = 256 * 1024 * 1024  # a trial's own process reserves memory, not a CPU slot


@dataclass(frozen=True)
class DriverSession:
    """A connected driver: the base run's plan, trials at a time, the prepared shards, the writer."""

    base: RunConfig
    plan: Any  # raylm.parallel.plan.ParallelPlan
    demand: dict[str, float]
    parallel_trials: int
    dataset: Any  # raylm.data.prepare.PreparedDataset
    writer: str
    in_process: bool  # trials train in their own (reused) trial process, and its worker pool for more workers

    @classmethod
    @contextmanager
    def open(cls, base: RunConfig, max_concurrent_trials: int | None, address: str | None = None,
             log=print, in_process: bool = True) -> Iterator[DriverSession]:
        """Plan, connect, size the concurrency, prepare the data once, start the writer; stop it on exit.
        ``in_process``: trials train in their trial's process, with a worker pool it keeps for the ranks
        beyond the first (:func:`trainable`)."""
        from raylm.parallel.plan import make_plan
        from raylm.ray_session import cluster_totals, connect_ray
        from raylm.tracking.mlflow_run import check_store
        from raylm.tracking.writer import start_writer, stop_writer
        from raylm.train.run import prepare_data

        plan = make_plan(base)  # an impossible parallel plan fails here, before Ray starts
        check_store(base.tracking)  # so does a tracking store that does not answer
        connect_ray(address)
        demand = trial_demand(base)
        parallel_trials = concurrency(demand, cluster_totals(), max_concurrent_trials, log)
        dataset = prepare_data(base, plan)  # once, before the trials: they all reuse the shards
        writer = start_writer()
        try:
            yield cls(base, plan, demand, parallel_trials, dataset, writer, in_process)
        finally:
            stop_writer(writer)

    def trial_context(self, base: dict[str, Any], parent_run_id: str | None, storage_root: str,
                      kind: str) -> TrialContext:
        return TrialContext(base, self.writer, parent_run_id, storage_root, kind, str(self.dataset.location),
                            self.in_process, self.demand, self.plan.world_size)

    def describe_trials(self) -> str:
        """How the trials run, for the console: how many at a time, their CPUs, and where they train."""
        workers = self.plan.world_size
        if self.in_process and workers == 1:
            where = "each in its own reused process (Ray Train local mode)"
        elif self.in_process:
            where = (f"each in its own reused process with a pool of {workers - 1} worker process(es) it keeps "
                     "between trials")
        else:
            where = f"each on a Ray Train worker group of {workers}"
        return f"{self.parallel_trials} trial(s) at a time ({self.demand['CPU']:g} CPUs each), {where}"


def trainable(context: TrialContext):
    """The Tune function of every trial, with its context bound and the resources a trial's own process takes:
    an in-process trial trains there and reserves its worker's CPUs (and GPU), one bundle per rank when it has
    more ranks (the first for the trial's process, the others for its worker pool, :mod:`raylm.train.pool`);
    a worker-group trial's process only waits on its workers, which reserve their own."""
    import ray.tune

    from raylm.tune.trial import run_trial

    # Tune saves its experiment state at most every 10 s by default; a driver killed in between would
    # forget trials that had finished. Saving is cheap next to a trial.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(STATE_SAVE_SECONDS))
    workers = context.workers
    if context.in_process and workers > 1:
        per_rank = {"CPU": context.demand["CPU"] / workers, "GPU": context.demand["GPU"] / workers}
        resources = ray.tune.PlacementGroupFactory([{k: v for k, v in per_rank.items() if v}] * workers)
    elif context.in_process:
        resources = {"cpu": context.demand["CPU"], "gpu": context.demand["GPU"]}
    else:
        resources = {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY}
    return ray.tune.with_resources(ray.tune.with_parameters(run_trial, context=context), resources)


def trial_failures(asked: int, context: TrialContext) -> int:
    """Re-runs Tune gives a failed trial: ``asked`` (``trials.max_failures``). In process the trial's worker
    is the trial, so the base run's worker restarts (``train.max_failures``, -1: forever) become re-runs of
    the trial, each from its newest checkpoint."""
    restarts = int(context.base.get("train", {}).get("max_failures", 0) or 0) if context.in_process else 0
    return -1 if restarts < 0 else asked + restarts


def trial_demand(cfg: RunConfig) -> dict[str, float]:
    """CPUs and GPUs one trial's training workers reserve (the trial's own process takes none)."""
    par = cfg.parallel
    return {"CPU": par.num_workers * par.cpus_per_worker, "GPU": float(par.num_workers if par.use_gpu else 0)}


def concurrency(demand: dict[str, float], totals: dict[str, float], asked: int | None, log=None) -> int:
    """How many trials run at once: ``asked``, else as many as the cluster fits now.

    When not even one trial fits, that is an error unless ``asked`` is set: a user who names the
    concurrency on an autoscaling cluster (which may start with no GPU node) waits for the
    autoscaler to add nodes, and ``log`` says so."""
    fits, short = [], []
    for resource in ("CPU", "GPU"):
        if demand[resource] > 0:
            if demand[resource] > totals[resource] + 1e-9:
                short.append(f"one trial needs {demand[resource]:g} {resource}s (parallel.num_workers x "
                             f"{'parallel.cpus_per_worker' if resource == 'CPU' else '1 GPU each'}) but the cluster "
                             f"has {totals[resource]:g}")
            fits.append(int(math.floor(totals[resource] / demand[resource] + 1e-9)))
    if short and asked:
        if log is not None:
            log(f"note: {'; '.join(short)} now: the trials wait until the autoscaler adds nodes")
        return asked
    if short:
        resource_hint = " or parallel.cpus_per_worker" if "CPUs" in short[0] and "GPUs" not in short[0] else ""
        raise UserError(f"{'; '.join(short)}; lower parallel.num_workers{resource_hint}, add nodes, or on an "
                        "autoscaling cluster set trials.max_concurrent_trials to wait for nodes")
    return asked or max(1, min(fits) if fits else 1)
