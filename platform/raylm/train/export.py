"""At the end of training, rank 0 writes the portable model (safetensors + config + tokenizer).

Under ZeRO-3 the parameters are partitioned, so all ranks first gather them. The model is
written to a temporary directory and renamed into place: a crash leaves no half-written model.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import torch.distributed as dist

from raylm.config import RunConfig
from raylm.parallel.plan import ParallelPlan


def export_final_model(engine, cfg: RunConfig, plan: ParallelPlan, rank: int, runtime: dict) -> None:
    from raylm.model.checkpoint import save_model

    target = Path(runtime["model_dir"])
    gather = contextlib.nullcontext()
    if plan.zero_stage == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)
    with gather:
        if rank == 0:
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            save_model(_standalone_copy(engine.module, cfg), cfg.model, partial,
                       tokenizer_path=runtime.get("tokenizer_path"))
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
            print(f"[raylm] model written to {target}", flush=True)
    dist.barrier()


def _standalone_copy(module, cfg: RunConfig):
    """A fresh model holding copies of the engine's weights: DeepSpeed keeps parameters as views
    into flat buffers, which safetensors (rightly) refuses to save as shared storage."""
    from raylm.model import build_model

    model = build_model(cfg.model)
    model.load_state_dict({k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()})
    return model
