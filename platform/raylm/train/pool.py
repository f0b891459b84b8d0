"""A trial's own worker group, kept between trials: rank 0 in the Tune trial process, the other ranks in
actors that process keeps.

A multi-worker trial on a Ray Train worker group starts a controller and fresh worker processes that
import torch and DeepSpeed and join a new process group: 13-17 s on 2 CPU cores
(``bench/trial_overhead.py``), for trials that train for seconds to minutes. Tune reuses a trial's
process between trials (``reuse_actors``), and this pool rides on it: the trial process is rank 0 and
keeps ``world - 1`` :class:`PoolWorker` actors in the other bundles of its own placement group (Tune
reserves one bundle per rank for the trial, :func:`raylm.tune.session.trainable`). They join one
process group (gloo, or NCCL on GPUs) once, through DeepSpeed, which caches its groups for the life of
the process; every trial then runs :func:`raylm.train.loop.train_loop_per_worker` on every rank.
Checkpoints are written to storage by the ranks themselves (:class:`raylm.train.reports.InProcessReports`).

A failure anywhere ends the pool. A rank that raises is killed, so that its peers' collectives fail
instead of waiting for it (a gloo peer that closes its connection fails the collective at once); the
first error is raised in the trial, and the trial's process is not used again: Tune re-runs a failed
trial in a fresh process, with a fresh pool, from the run's newest checkpoint.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field

from raylm.train.reports import POOL_LOCAL_RANK_ENV, POOL_NODE_RANK_ENV

FINISH_TIMEOUT_S = 120.0  # the other ranks' return once rank 0 is done (their collectives ended with rank 0's)
JOIN_TIMEOUT_S = 300.0    # starting the actors (imports) and joining the process group

_POOL: WorkerPool | None = None  # this process's pool (the Tune trial process's)
_POOL_LOCK = threading.Lock()


@dataclass(frozen=True)
class RankPlace:
    """Where one rank of the pool stands: what DeepSpeed's ``init_distributed`` reads from the environment,
    and the rank's index among the ranks of its node (for the node's system metrics)."""

    rank: int
    world: int
    local_rank: int
    node_rank: int

    def env(self, master_addr: str, master_port: int, use_gpu: bool) -> dict[str, str]:
        # each rank's process sees only its own GPU (Ray sets CUDA_VISIBLE_DEVICES per actor): its device is 0
        return {"RANK": str(self.rank), "WORLD_SIZE": str(self.world), "MASTER_ADDR": master_addr,
                "MASTER_PORT": str(master_port), "LOCAL_RANK": "0" if use_gpu else str(self.local_rank),
                POOL_LOCAL_RANK_ENV: str(self.local_rank), POOL_NODE_RANK_ENV: str(self.node_rank)}


def rank_places(nodes: list[str]) -> list[RankPlace]:
    """The place of every rank, given each rank's node address (rank 0 first): nodes are numbered in order of
    their first rank, local ranks in rank order within a node."""
    node_ids: dict[str, int] = {}
    seen: dict[str, int] = {}
    places = []
    for rank, node in enumerate(nodes):
        node_rank = node_ids.setdefault(node, len(node_ids))
        local = seen.get(node, 0)
        seen[node] = local + 1
        places.append(RankPlace(rank, len(nodes), local, node_rank))
    return places


class PoolWorker:
    """Ranks 1.. of a pool: one Ray actor each, kept for as long as the trial process that started it."""

    def __init__(self):
        import raylm.train.loop  # noqa: F401 - torch, DeepSpeed and the loop, imported once per process

    def node(self) -> str:
        import ray

        return ray.util.get_node_ip_address()

    def join(self, env: dict[str, str], use_gpu: bool) -> None:
        from raylm.parallel.engine import init_distributed

        os.environ.update(env)
        init_distributed(use_gpu)

    def train(self, config: dict) -> dict | None:
        from raylm.train.loop import train_loop_per_worker
        from raylm.train.reports import TrialStopped

        try:
            return train_loop_per_worker(config)
        except TrialStopped:  # Tune stopped the trial; rank 0 said so at a report
            return None


@dataclass
class WorkerPool:
    """Rank 0 (this process) and the actors of ranks 1..world-1, joined in one process group."""

    world: int
    use_gpu: bool
    actors: list = field(default_factory=list)
    broken: str | None = None  # why the pool can no longer train (its process group is unusable)

    def run(self, config: dict) -> dict | None:
        """Train ``config`` on every rank: the others remotely, rank 0 here; rank 0's last metrics."""
        from raylm.train.loop import train_loop_per_worker
        from raylm.train.reports import TrialStopped

        if self.broken:
            raise RuntimeError(f"this trial process's worker pool is broken ({self.broken}); the trial must run "
                               "in a fresh process")
        pending = [actor.train.remote(config) for actor in self.actors]
        watcher = _Watcher(self, pending)
        watcher.start()
        try:
            metrics = train_loop_per_worker(config)
        except TrialStopped:
            # Tune stopped the trial at a report and every rank left its loop there: the pool stays whole
            watcher.stop()
            self._finish(pending)
            raise SystemExit(0) from None  # what Tune's stop means to a trial's thread (as in one process)
        except BaseException as exc:
            watcher.stop()
            cause = watcher.error or _first_failure(pending)  # a rank that died fails rank 0's collectives
            self.abandon(f"rank 0 failed: {type(exc).__name__}: {exc}")
            if cause is not None:
                raise cause from exc
            raise
        watcher.stop()
        self._finish(pending)
        return metrics

    def _finish(self, pending: list) -> None:
        """Wait for the other ranks to return, once rank 0 has (their collectives ended with its)."""
        import ray

        try:
            ray.get(pending, timeout=FINISH_TIMEOUT_S)
        except Exception as exc:
            self.abandon(f"a rank failed after rank 0 finished: {exc}")
            raise

    def abandon(self, why: str) -> None:
        """Kill the other ranks (their collectives with this process are no longer safe) and remember why."""
        import ray

        self.broken = self.broken or why
        for actor in self.actors:
            ray.kill(actor, no_restart=True)


class _Watcher(threading.Thread):
    """Waits on the other ranks while rank 0 trains: a rank that fails is killed, so that rank 0's next
    collective with it fails instead of waiting (a gloo peer that closes its connection ends the collective)."""

    def __init__(self, pool: WorkerPool, pending: list):
        super().__init__(name="raylm-pool-watcher", daemon=True)
        self.pool, self.pending = pool, list(pending)
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        import ray

        waiting = list(self.pending)
        while waiting and not self._stop_event.is_set():
            done, waiting = ray.wait(waiting, num_returns=1, timeout=0.5)
            for ref in done:
                self.error = _failure_of(ref)  # a rank raised or its process died
                if self.error is not None:
                    self.pool.abandon(str(self.error).splitlines()[0])
                    return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def _first_failure(pending: list, wait_s: float = 2.0) -> BaseException | None:
    """The error of a rank that has already ended with one (within ``wait_s``), else None."""
    import ray

    done, _ = ray.wait(pending, num_returns=len(pending), timeout=wait_s)
    return next((error for error in map(_failure_of, done) if error is not None), None)


def _failure_of(ref) -> BaseException | None:
    """The error a finished rank's call ended with, else None."""
    import ray

    try:
        ray.get(ref)
    except Exception as exc:
        return RuntimeError(f"a training rank failed: {exc}")
    return None


def pool_for(world: int, cpus_per_worker: float, use_gpu: bool) -> WorkerPool:
    """This process's pool of ``world`` ranks, started on first use (in the trial's placement group)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _start(world, cpus_per_worker, use_gpu)
        elif (_POOL.world, _POOL.use_gpu) != (world, use_gpu):
            raise RuntimeError(f"this trial process holds a pool of {_POOL.world} ranks (use_gpu={_POOL.use_gpu}), "
                               f"not {world} (use_gpu={use_gpu}); trials of one sweep or study share one plan")
        return _POOL


def _start(world: int, cpus_per_worker: float, use_gpu: bool) -> WorkerPool:
    from ray.util import get_current_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    import ray
    from raylm.parallel.engine import init_distributed

    group = get_current_placement_group()
    if group is None or len(group.bundle_specs) < world:
        raise RuntimeError(f"a worker pool of {world} ranks needs its trial's placement group to hold one bundle "
                           "per rank (raylm.tune.session.trainable reserves them)")
    actor_class = ray.remote(PoolWorker)
    actors = [actor_class.options(
        num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0,
        scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank),
    ).remote() for rank in range(1, world)]
    pool = WorkerPool(world, use_gpu, actors)
    try:
        address = ray.util.get_node_ip_address()
        nodes = [address, *ray.get([actor.node.remote() for actor in actors], timeout=JOIN_TIMEOUT_S)]
        places = rank_places(nodes)
        port = free_port(address)
        joins = [actor.join.remote(place.env(address, port, use_gpu), use_gpu)
                 for actor, place in zip(actors, places[1:], strict=True)]
        os.environ.update(places[0].env(address, port, use_gpu))
        init_distributed(use_gpu)
        ray.get(joins, timeout=JOIN_TIMEOUT_S)
    except BaseException as exc:
        pool.abandon(f"it did not start: {exc}")
        raise
    return pool


def free_port(address: str) -> int:
    """A port free on ``address`` now, for a process group's rendezvous."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]
