"""At the end of training, rank 0 writes the portable model (safetensors + config + tokenizer).

Under ZeRO-3 the parameters are partitioned, so all ranks first gather them; under pipeline
parallelism each stage holds its own layers, gathered by
:func:`raylm.parallel.pipeline.pipeline_state_dict`; under tensor parallelism each rank holds a
share of every split layer, gathered by :func:`raylm.parallel.tensor.tensor_parallel_state_dict`.
The model is written to a temporary directory and renamed into place: a crash leaves no half-written
model. When ``output_dir`` is a URI (``s3://...``, :mod:`raylm.storage`) the model is written
locally and uploaded with its ``model_config.yaml`` last (what marks a model directory). With
``optim.swa`` the weight average (:mod:`raylm.train.swa`) is what is written: the plan allows it
only where each rank holds every parameter (no ZeRO-3, pipeline, expert or tensor parallelism).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import torch.distributed as dist

from raylm import storage
from raylm.config import RunConfig
from raylm.parallel.experts import full_state_dict
from raylm.parallel.plan import ParallelPlan
from raylm.parallel.tensor import tensor_parallel_state_dict


def export_final_model(engine, cfg: RunConfig, plan: ParallelPlan, rank: int, runtime: dict,
                       average=None) -> None:
    """Write the trained model, or ``average`` (a :class:`~raylm.train.swa.WeightAverage`) when given."""
    with average.swapped_in() if average is not None else contextlib.nullcontext():
        _export(engine, cfg, plan, rank, runtime)


def _export(engine, cfg: RunConfig, plan: ParallelPlan, rank: int, runtime: dict) -> None:
    if plan.pp > 1:
        from raylm.parallel.pipeline import pipeline_state_dict

        state = pipeline_state_dict(engine, cfg)  # collective; the full state dict on rank 0
        if rank == 0:
            _write(_model_from(state, cfg), cfg, runtime)
        dist.barrier()
        return
    gather = contextlib.nullcontext()
    if plan.zero_stage == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)
    with gather:
        # with ep > 1 each rank holds only its experts, with tp > 1 its share of each split layer: every rank
        # joins in gathering them
        if plan.ep > 1:
            state = full_state_dict(engine.module)
        elif plan.tp > 1:
            state = tensor_parallel_state_dict(engine.module, engine.mpu.get_model_parallel_group(), plan.tp)
        else:
            state = engine.module.state_dict()
        if rank == 0:
            _write(_model_from(state, cfg), cfg, runtime)
    dist.barrier()


def _model_from(state: dict, cfg: RunConfig):
    """A fresh model holding copies of the trained weights: DeepSpeed keeps parameters as views
    into flat buffers, which safetensors (rightly) refuses to save as shared storage."""
    from raylm.model import build_model

    model = build_model(cfg.model)
    model.load_state_dict({k: v.detach().float().cpu().clone() for k, v in state.items()})
    return model


def _write(model, cfg: RunConfig, runtime: dict) -> None:
    target = runtime["model_dir"]
    if storage.is_uri(target):
        from raylm.model.checkpoint import CONFIG_FILE

        with tempfile.TemporaryDirectory(prefix="raylm-model-") as local:
            _save(model, cfg, Path(local) / "model", runtime.get("tokenizer_path"))
            storage.delete_file(storage.join(target, CONFIG_FILE))  # first: a half-replaced model must look absent
            storage.delete_dir(target)
            storage.upload_dir(Path(local) / "model", target, last=(CONFIG_FILE,))
    else:
        target = Path(target)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _save(model, cfg, partial, runtime.get("tokenizer_path"))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    from raylm.train.worker_output import worker_print

    worker_print(f"model written to {target}")


def _save(model, cfg: RunConfig, directory: Path, tokenizer_path: str | None) -> None:
    """Write the model to the local ``directory``, with the dataset's tokenizer (a local path or a URI)."""
    from raylm.model.checkpoint import TOKENIZER_FILE, save_model

    remote = tokenizer_path is not None and storage.is_uri(tokenizer_path)
    save_model(model, cfg.model, directory, tokenizer_path=None if remote else tokenizer_path)
    if remote:
        (directory / TOKENIZER_FILE).write_bytes(storage.read_bytes(tokenizer_path))
