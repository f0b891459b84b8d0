"""``train.compile``: a compiled engine trains exactly like an uncompiled one.

In one gloo process (a one-worker run, spawned so this test process never holds a process
group), :func:`raylm.parallel.engine.make_training_engine` builds two engines from the same
seed, ``train.compile`` false and true, and both train 4 optimizer steps (2 micro-batches each,
AdamW, a clip norm small enough that every step clips, warmup-cosine schedule) on the same
batches as the worker loop steps them. Tolerance: per-step losses within rtol 1e-4 (Inductor
fuses and reorders float32 arithmetic; observed differences are about 1e-7) and the final
weights within atol 1e-4. The compiled engine's module keeps the eager parameter names (it is
compiled in place), so checkpoints and the export are unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from tests.services import free_port

from raylm.config import RunConfig

STEPS, ACCUM = 4, 2
BASE = {
    "model": {"arch": "gpt", "vocab_size": 64, "max_seq_len": 16, "d_model": 32, "n_layers": 2, "n_heads": 4},
    "parallel": {"num_workers": 1, "zero_stage": 1},
    "optim": {"name": "adamw"},
    "train": {"lr": 1e-2, "warmup_steps": 1, "max_steps": STEPS, "micro_batch_size": 2, "global_batch_size": 4,
              "seq_len": 16, "grad_clip": 0.05, "seed": 3},
}


def config(compile_model: bool, **parallel) -> RunConfig:
    data = {key: dict(value) for key, value in BASE.items()}
    data["train"]["compile"] = compile_model
    data["parallel"].update(parallel)
    return RunConfig.from_dict(data)


def _train(compile_model: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
    from raylm.parallel.engine import make_training_engine
    from raylm.parallel.plan import make_plan
    from raylm.train.optimizers import optimizer_factories

    cfg = config(compile_model)
    plan = make_plan(cfg, 1)
    assert plan.grad_accum == ACCUM
    torch.manual_seed(cfg.train.seed)
    engine = make_training_engine(cfg, plan, *optimizer_factories(cfg))
    assert engine.is_compiled == compile_model
    gen = torch.Generator().manual_seed(11)
    losses = []
    for _ in range(STEPS):
        total = 0.0
        for _ in range(ACCUM):
            tokens = torch.randint(0, 64, (2, 17), generator=gen)
            out = engine(ids=tokens[:, :-1], targets=tokens[:, 1:])
            engine.backward(out.loss)
            engine.step()
            total += out.loss.item()
        losses.append(total / ACCUM)
    return losses, {k: v.detach().clone() for k, v in engine.module.state_dict().items()}


def _worker(rank: int, port: int, out_dir: str) -> None:
    from raylm.parallel.engine import init_distributed

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_distributed(use_gpu=False)
    results = {}
    for flag in (False, True):
        losses, weights = _train(flag)
        results[str(flag)] = losses
        torch.save(weights, Path(out_dir) / f"weights-{flag}.pt")
    (Path(out_dir) / "losses.json").write_text(json.dumps(results))


def test_compile_is_off_by_default():
    assert RunConfig().train.compile is False
    assert "torch.compile" in RunConfig.model_json_schema()["$defs"]["TrainConfig"]["properties"]["compile"][
        "description"]


def test_compile_refuses_pipeline_parallelism():
    from raylm.parallel.engine import build_engine
    from raylm.parallel.plan import PlanError, make_plan

    cfg = config(True, num_workers=2, pp=2, zero_stage=0)
    with pytest.raises(PlanError, match="train.compile works with parallel.pp = 1 only"):
        make_plan(cfg, 2)  # refused before anything launches
    plan = make_plan(config(False, num_workers=2, pp=2, zero_stage=0), 2)
    with pytest.raises(ValueError, match="train.compile works with parallel.pp = 1 only"):
        build_engine(cfg, plan, torch.nn.Linear(2, 2), None, None)  # and by the engine itself


@pytest.mark.slow
def test_compiled_run_matches_uncompiled(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=1, join=True)
    results = json.loads((tmp_path / "losses.json").read_text())
    eager, compiled = results["False"], results["True"]
    assert len(set(eager)) == STEPS, f"the losses should move between steps: {eager}"
    torch.testing.assert_close(torch.tensor(compiled, dtype=torch.float64), torch.tensor(eager, dtype=torch.float64),
                               rtol=1e-4, atol=0, msg=f"compiled losses {compiled} != eager {eager}")
    eager_w, compiled_w = (torch.load(tmp_path / f"weights-{flag}.pt") for flag in (False, True))
    assert sorted(compiled_w) == sorted(eager_w)  # compiled in place: no "_orig_mod." prefixes
    for key, value in eager_w.items():
        torch.testing.assert_close(compiled_w[key], value, rtol=0, atol=1e-4, msg=key)
