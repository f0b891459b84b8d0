"""Where a worker's evaluations and checkpoints go: Ray Train, or, in process, storage and Tune.

A run through a Ray Train worker group reports with ``ray.train.report``: Ray merges every rank's
checkpoint directory into one checkpoint in storage and passes the metrics on (to Tune, through
``TuneReportCallback``, when the run is a trial). A one-worker trial trained in its Tune trial's own
process runs in Ray Train's local mode (``ScalingConfig(num_workers=0)``), whose ``report`` only
keeps the last metrics in memory: it neither persists checkpoints nor tells Tune. There the
checkpoint is written to the run's storage directory here (``rank0.json`` last, so a directory
without it is incomplete and is skipped on restore, as :func:`raylm.train.checkpoints.latest_complete`
expects), older ones are pruned to ``train.keep_checkpoints``, and the metrics go to Tune with
``ray.tune.report`` (inside a Tune trial Ray forbids ``ray.train.report``, ``get_context`` and
``get_checkpoint``; in process this module and :func:`worker_coordinates` stand in for them). Either
way every evaluation reaches Tune's scheduler in step order. A multi-worker trial on its trial's
worker pool (:mod:`raylm.train.pool`) reports the same way: every rank uploads its own part of a
checkpoint (its ``rank{r}.json`` last, so a checkpoint is whole once every rank's is there), between
two barriers, and rank 0 alone prunes and tells Tune; when Tune stops the trial there (a scheduler's
decision), rank 0 tells every rank, and all leave the loop together (:class:`TrialStopped`), so the
pool stays usable for the next trial.
"""

from __future__ import annotations

import os
from pathlib import Path

from raylm import storage

# a pool rank's index among its node's ranks, and its node's index (:mod:`raylm.train.pool` sets them)
POOL_LOCAL_RANK_ENV = "RAYLM_POOL_LOCAL_RANK"
POOL_NODE_RANK_ENV = "RAYLM_POOL_NODE_RANK"


def worker_coordinates(runtime: dict) -> tuple[int, int, int, int]:
    """(world rank, world size, local rank, node rank) of this worker: the only worker, in process; as its
    pool placed it, on a trial's worker pool (:mod:`raylm.train.pool`)."""
    if runtime.get("pool"):
        env = os.environ
        return (int(env["RANK"]), int(env["WORLD_SIZE"]), int(env[POOL_LOCAL_RANK_ENV]),
                int(env[POOL_NODE_RANK_ENV]))
    if runtime.get("in_process"):
        return 0, 1, 0, 0
    import ray.train

    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size(), context.get_local_rank(), context.get_node_rank()


class TrainReports:
    """Through Ray Train (a worker group): a report is a barrier across ranks."""

    def __init__(self):
        self.last: dict | None = None  # the metrics of the latest report

    def given_checkpoint(self):
        """The checkpoint Ray Train hands a restarted attempt (None on the first)."""
        import ray.train

        return ray.train.get_checkpoint()

    def report(self, metrics: dict, checkpoint_dir: Path | None = None, name: str | None = None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        self.last = metrics


class InProcessReports:
    """In the trial's own process (one worker), or on its worker pool (``world`` ranks, this one ``rank``):
    checkpoints to ``storage_dir``, metrics to Tune (from rank 0, the trial's process)."""

    def __init__(self, storage_dir: str, keep: int | None, rank: int = 0, world: int = 1):
        self.storage_dir, self.keep, self.rank, self.world = storage_dir, keep, rank, world
        self.last: dict | None = None

    def given_checkpoint(self):
        """None: a re-run trial finds its newest checkpoint in ``storage_dir`` itself."""
        return None

    def report(self, metrics: dict, checkpoint_dir: Path | None = None, name: str | None = None) -> None:
        if checkpoint_dir is not None:
            target = storage.join(self.storage_dir, name)
            if self.rank == 0:
                storage.delete_dir(target)  # a partial copy from a killed attempt
            self._barrier()
            # each rank's files, its rank{r}.json last: the checkpoint is whole once every rank's is there
            storage.upload_dir(checkpoint_dir, target, last=(f"rank{self.rank}.json",))
            self._barrier()
            if self.rank == 0:
                self._prune()
        self.last = metrics
        from ray.tune.trainable.trainable_fn_utils import _in_tune_session

        stopped = False
        if _in_tune_session():
            import ray.tune

            try:
                ray.tune.report(metrics)  # Tune stops a trial (its scheduler's decision) by exiting the thread here
            except SystemExit:
                if self.world == 1:
                    raise
                stopped = True
        if self.world > 1 and _stop_for_every_rank(stopped):
            raise TrialStopped(f"the trial was stopped at step {metrics.get('step')}")

    def _barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def _prune(self) -> None:
        """Keep the newest ``keep`` checkpoints, as Ray Train's ``CheckpointConfig(num_to_keep)`` does."""
        if not self.keep:
            return
        for name in storage.list_dirs(self.storage_dir, "step_*")[:-self.keep]:
            storage.delete_dir(storage.join(self.storage_dir, name))


class TrialStopped(Exception):
    """Tune stopped the trial at a report: every rank of a worker pool leaves its loop there, together."""


def _stop_for_every_rank(stopped_here: bool) -> bool:
    """Rank 0's word (it alone talks to Tune) to every rank of a pool: whether the trial stops at this report.
    Every rank reports at the same steps, so the others are waiting for it at the same place."""
    import torch
    import torch.distributed as dist

    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([1.0 if stopped_here else 0.0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def reports_for(runtime: dict, keep_checkpoints: int | None):
    """The reporter of this run: in process (``runtime["in_process"]``) or through Ray Train."""
    if runtime.get("in_process"):
        rank, world, _, _ = worker_coordinates(runtime)
        return InProcessReports(runtime["storage_dir"], keep_checkpoints, rank, world)
    return TrainReports()
