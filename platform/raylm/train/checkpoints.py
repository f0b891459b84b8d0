"""Checkpoints that hold every rank's part, reported to Ray Train.

Each rank writes into its own local directory: DeepSpeed's files for that rank (model
states on rank 0 or every rank under ZeRO-3, and each rank's optimizer partition), plus
``rank{r}.json`` (step, loader position), ``rank{r}_rng.pt`` (torch RNG) and, with
``optim.swa``, ``rank{r}_swa.pt`` (the rank's weight average, :mod:`raylm.train.swa`). Every rank
passes its directory to ``ray.train.report``, which merges them into one checkpoint in
storage; a checkpoint passed by rank 0 alone would lose the other ranks' optimizer shards.
Ray registers a checkpoint only after all of it is persisted, so a crash during a save
leaves the previous checkpoint as the latest one. A one-worker trial trained in process writes
its checkpoint to storage itself (:mod:`raylm.train.reports`), ``rank0.json`` last.

Storage is Ray Train's ``storage_path``: a local directory (a mount every node sees) or a URI
(``s3://...``); a checkpoint to continue from may be either (:mod:`raylm.storage`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from raylm import storage
from raylm.parallel.experts import expert_load_fn, save_local_experts

DEEPSPEED_TAG = "deepspeed"


def checkpoint_dir_name(step: int) -> str:
    return f"step_{step:08d}"


@dataclass
class RestoredState:
    step: int          # optimizer steps already taken
    loader: dict       # the train loader's state_dict
    path: str          # where the checkpoint was read from (a local path or a URI)


def save_and_report(engine, step: int, loader_state: dict, rank: int, metrics: dict, reports, swa=None) -> None:
    """Write this rank's part (with its :class:`~raylm.train.swa.WeightAverage`, if any) and report it through
    ``reports`` (:mod:`raylm.train.reports`; through Ray Train, a barrier across ranks)."""
    local = Path(tempfile.mkdtemp(prefix=f"raylm-step{step}-rank{rank}-"))
    try:
        engine.save_checkpoint(str(local), tag=DEEPSPEED_TAG, client_state={"step": step})
        save_local_experts(engine.module, local, rank)  # DeepSpeed keeps only rank 0's copy of our experts
        torch.save({"torch": torch.get_rng_state()}, local / f"rank{rank}_rng.pt")
        if swa is not None:
            torch.save(swa.state_dict(), local / f"rank{rank}_swa.pt")
        (local / f"rank{rank}.json").write_text(json.dumps({"step": step, "loader": loader_state}))  # marks it whole
        reports.report(metrics, local, checkpoint_dir_name(step))
    finally:
        shutil.rmtree(local, ignore_errors=True)


def missing_ranks(directory: str | Path, world_size: int) -> list[int]:
    """Ranks whose files are absent from a merged checkpoint directory (a local path or a URI)."""
    return [r for r in range(world_size) if not storage.exists(storage.join(directory, f"rank{r}.json"))]


def latest_complete(storage_dir: str | Path, world_size: int) -> Path | str | None:
    """The newest ``step_*`` directory of a run that holds every rank's part (a ``Path``, or a URI string
    when ``storage_dir`` is a URI)."""
    for name in reversed(storage.list_dirs(storage_dir, "step_*")):
        directory = storage.join(storage_dir, name)
        if not missing_ranks(directory, world_size) and storage.is_dir(storage.join(directory, DEEPSPEED_TAG)):
            return storage.location(directory)
    return None


def checkpoint_at(location: str | Path):
    """A Ray Train checkpoint of the directory ``location`` (a local path or a URI)."""
    import ray.train

    if storage.is_uri(location):
        return ray.train.Checkpoint(path=str(location))
    return ray.train.Checkpoint.from_directory(str(location))


def restore(engine, rank: int, world_size: int, storage_dir: str, resume_from: str | None = None,
            swa=None, given=None) -> RestoredState | None:
    """Load the checkpoint to continue from: ``given`` (the one Ray Train hands to a restarted attempt), else
    the newest complete one this run wrote (a worker that dies right after a report can beat Ray's
    bookkeeping of it), else ``resume_from`` (an earlier run's), else none. ``swa`` (a
    :class:`~raylm.train.swa.WeightAverage`) continues from the rank's saved average."""
    checkpoint = given
    if checkpoint is None:
        source = latest_complete(storage_dir, world_size) or resume_from
        checkpoint = checkpoint_at(source) if source else None
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        missing = missing_ranks(directory, world_size)
        if missing:
            raise RuntimeError(f"checkpoint {checkpoint.path} lacks the parts of ranks {missing}; it was written "
                               f"by a different number of workers or is incomplete")
        engine.load_checkpoint(directory, tag=DEEPSPEED_TAG, load_optimizer_states=True,
                               load_lr_scheduler_states=True,
                               custom_load_fn=expert_load_fn(engine.module, directory))
        state = json.loads((Path(directory) / f"rank{rank}.json").read_text())
        rng = torch.load(Path(directory) / f"rank{rank}_rng.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        if swa is not None:
            _restore_average(swa, Path(directory) / f"rank{rank}_swa.pt", state["step"])
    return RestoredState(step=state["step"], loader=state["loader"],
                         path=storage.to_uri(checkpoint.filesystem, checkpoint.path))


def _restore_average(swa, path: Path, step: int) -> None:
    """Load a saved weight average; a checkpoint without one is fine only before averaging starts."""
    if path.exists():
        swa.load_state_dict(torch.load(path, weights_only=True))
    elif step >= swa.start_step:
        raise RuntimeError(f"optim.swa is on but the checkpoint at step {step} holds no weight average ({path.name}; "
                           f"it was saved without optim.swa) and averaging starts at step {swa.start_step}; resume "
                           f"from a checkpoint before step {swa.start_step}, raise optim.swa_start_fraction, or set "
                           f"optim.swa=false")
