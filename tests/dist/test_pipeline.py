"""A 2-stage DeepSpeed pipeline (pp=2, dp=1, 2 gloo processes) trains like the unsplit model.

For GPT (tied embeddings with SGD; untied with RMSNorm, SwiGLU, RoPE and activation
checkpointing) and BERT's masked LM (tied post-norm; untied under ZeRO stage 1), the pipeline
built by :func:`raylm.parallel.pipeline.build_pipeline_module` trains 3 optimizer steps of 2
micro-batches each with our optimizer, warmup-cosine schedule and gradient clipping (a clip
norm small enough that every step clips, so the global gradient norm over both stages is
checked too), and evaluates 3 micro-batches after step 2. A single-process run of
``build_model(cfg.model)`` with the same seed, optimizer, schedule and micro-batches is the
reference. Tolerances: per-step and evaluation losses within rtol 1e-5 (observed: about
1e-7, float32 rounding); exported weights within atol 1e-5 (observed: under 1e-6; Adam divides
by the gradient's RMS, so a rounding difference in a tiny gradient can move a weight by more
than the rounding itself).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from raylm.config import RunConfig
from raylm.model import build_model
from raylm.model.objectives import mlm_mask
from raylm.parallel.plan import make_plan
from raylm.train.optimizers import build_optimizer, build_scheduler

WORLD, STEPS, EVAL_AFTER, EVAL_BATCHES = 2, 3, 2, 3  # evaluate mid-run, after 2 of 3 steps
MASK_ID = 63
BASE = {
    "model": {"vocab_size": 64, "max_seq_len": 8, "d_model": 16, "n_layers": 2, "n_heads": 2},
    "parallel": {"num_workers": WORLD, "pp": 2, "zero_stage": 0},
    "train": {"lr": 1e-2, "warmup_steps": 1, "max_steps": STEPS, "micro_batch_size": 2, "global_batch_size": 4,
              "seq_len": 8, "grad_clip": 0.05, "seed": 7},
}
CASES = {  # section overrides of BASE
    # SGD is not scale-invariant as Adam nearly is, so a wrong global gradient norm shows in the losses
    "gpt_tied_sgd": {"model": {"arch": "gpt"}, "optim": {"name": "momentum", "momentum": 0.9}, "train": {"lr": 0.5}},
    "gpt_untied_rope_checkpointed": {
        "model": {"arch": "gpt", "tie_embeddings": False, "norm": "rmsnorm", "activation": "swiglu", "bias": False,
                  "pos_encoding": "rope"},
        "parallel": {"activation_checkpointing": True}},
    "bert_tied_postnorm": {"model": {"arch": "bert", "norm_position": "post"}},
    "bert_untied_zero1": {"model": {"arch": "bert", "tie_embeddings": False}, "parallel": {"zero_stage": 1}},
}


def case_config(name: str) -> RunConfig:
    sections = {key: dict(value) for key, value in BASE.items()}
    for section, values in CASES[name].items():
        sections.setdefault(section, {}).update(values)
    return RunConfig.from_dict(sections)


def micro_batches(cfg: RunConfig, step: int, count: int) -> list[dict[str, torch.Tensor]]:
    """``count`` fixed random micro-batches, shaped as :func:`raylm.train.batches.model_inputs` shapes them."""
    out = []
    for micro in range(count):
        gen = torch.Generator().manual_seed(1000 * step + micro)
        tokens = torch.randint(1, MASK_ID, (cfg.train.micro_batch_size, cfg.train.seq_len + 1), generator=gen)
        if cfg.model.arch == "gpt":
            out.append({"ids": tokens[:, :-1], "targets": tokens[:, 1:]})
        else:
            ids, labels = mlm_mask(tokens[:, :-1], MASK_ID, cfg.model.vocab_size, prob=0.3, generator=gen)
            assert (labels != -100).any(), "every BERT micro-batch needs a masked token"
            out.append({"ids": ids, "mlm_labels": labels})
    return out


def reference_run(cfg: RunConfig) -> tuple[list[float], float, dict[str, torch.Tensor]]:
    """The unsplit model in one process: per-step losses, the evaluation loss, the final weights."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    accum = make_plan(cfg, WORLD).grad_accum
    losses, eval_loss = [], None
    for step in range(STEPS):
        if step == EVAL_AFTER:
            eval_loss = _reference_eval(cfg, model)
        optimizer.zero_grad()
        total = 0.0
        for inputs in micro_batches(cfg, step, accum):
            loss = model(**inputs).loss
            (loss / accum).backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(total / accum)
    return losses, eval_loss, model.state_dict()


@torch.no_grad()
def _reference_eval(cfg: RunConfig, model: torch.nn.Module) -> float:
    model.eval()
    evals = [model(**inputs).loss.item() for inputs in micro_batches(cfg, 99, EVAL_BATCHES)]
    model.train()
    return sum(evals) / len(evals)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_case(rank: int, name: str, out_dir: Path) -> None:
    import deepspeed

    from raylm.parallel import pipeline
    from raylm.parallel.deepspeed_config import deepspeed_config

    cfg = case_config(name)
    plan = make_plan(cfg, WORLD)
    module = pipeline.build_pipeline_module(cfg, plan)
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=build_optimizer(cfg, module),
                                           lr_scheduler=lambda optimizer: build_scheduler(cfg, optimizer),
                                           config=deepspeed_config(cfg, plan))
    losses = []
    for step in range(STEPS):
        if step == EVAL_AFTER:
            eval_loss = pipeline.pipeline_eval_loss(engine, micro_batches(cfg, 99, EVAL_BATCHES))
        losses.append(pipeline.pipeline_train_step(engine, micro_batches(cfg, step, plan.grad_accum)))
    state = pipeline.pipeline_state_dict(engine, cfg)
    result = {"losses": losses, "eval": eval_loss, "coords": list(pipeline.pipeline_coords(rank, plan)),
              "grid": [engine.grid.get_stage_id(), *pipeline.data_parallel_rank_and_size(engine)],
              "checkpointed": any(engine.module.is_checkpointable_results)}
    (out_dir / f"{name}-rank{rank}.json").write_text(json.dumps(result))
    if rank == 0:
        torch.save(state, out_dir / f"{name}.pt")
    else:
        assert state is None


def _worker(rank: int, port: int, out_dir: str) -> None:
    from raylm.parallel.engine import init_distributed

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    init_distributed(use_gpu=False)
    for name in CASES:
        _train_case(rank, name, Path(out_dir))


def test_pipeline_item_and_coordinates():
    from raylm.parallel.pipeline import pipeline_coords, pipeline_item

    ids, targets = torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)
    (inputs,), labels = pipeline_item({"ids": ids, "targets": targets})
    assert inputs is ids and labels is targets
    assert pipeline_item({"ids": ids, "mlm_labels": targets})[1] is targets
    with pytest.raises(ValueError, match="attention_mask"):
        pipeline_item({"ids": ids, "mlm_labels": targets, "attention_mask": targets})
    plan = make_plan(RunConfig.from_dict({**BASE, "parallel": {**BASE["parallel"], "num_workers": 4}}))
    assert plan.dp == 2 and [pipeline_coords(r, plan) for r in range(4)] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_pipeline_rejects_what_cannot_cross_stages():
    from raylm.parallel.pipeline import pipeline_layers

    for model, match in [({"arch": "t5"}, "gpt and bert"), ({"moe": {"n_experts": 2}}, "MoE"),
                         ({"arch": "bert", "nsp_head": True}, "nsp_head")]:
        cfg = RunConfig.from_dict({**BASE, "model": {**BASE["model"], **model}})
        with pytest.raises(ValueError, match=match):
            pipeline_layers(cfg)


@pytest.mark.slow
def test_two_stage_pipeline_matches_single_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for name in CASES:
        cfg = case_config(name)
        losses, eval_loss, weights = reference_run(cfg)
        for rank in range(WORLD):
            got = json.loads((tmp_path / f"{name}-rank{rank}.json").read_text())
            assert got["coords"] == [rank, 0] and got["grid"] == [rank, 0, 1], (name, rank, got)
            torch.testing.assert_close(torch.tensor(got["losses"], dtype=torch.float64),
                                       torch.tensor(losses, dtype=torch.float64), rtol=1e-5, atol=1e-6,
                                       msg=f"{name} rank {rank}: losses {got['losses']} != reference {losses}")
            assert got["eval"] == pytest.approx(eval_loss, rel=1e-5), (name, rank)
            assert got["checkpointed"] == cfg.parallel.activation_checkpointing, (name, rank)
        assert len(set(losses)) == STEPS, "the reference should move between steps"
        exported = torch.load(tmp_path / f"{name}.pt")
        assert sorted(exported) == sorted(weights), name
        for key, value in weights.items():
            torch.testing.assert_close(exported[key], value, rtol=0, atol=1e-5, msg=f"{name} {key}")
        build_model(cfg.model).load_state_dict(exported)  # strict: the export loads into the plain model
