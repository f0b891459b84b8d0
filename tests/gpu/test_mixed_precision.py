"""bf16 and fp16 training through our DeepSpeed engine on one CUDA device (skipped without one).

fp16 uses DeepSpeed's dynamic loss scaling (``loss_scale: 0``): a step whose gradients
overflow is skipped and the scale is lowered, instead of stopping the run.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def single_rank():
    import deepspeed

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="nccl")
    yield


def _engine(precision: str):
    from raylm.config import RunConfig
    from raylm.parallel.engine import make_training_engine
    from raylm.parallel.plan import make_plan
    from raylm.train.optimizers import optimizer_factories

    cfg = RunConfig.from_dict({
        "model": {"vocab_size": 256, "d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 32},
        "parallel": {"num_workers": 1, "use_gpu": True, "precision": precision, "zero_stage": 2},
        "train": {"micro_batch_size": 4, "global_batch_size": 4, "seq_len": 32, "lr": 3e-3, "warmup_steps": 1},
    })
    torch.manual_seed(0)
    return make_training_engine(cfg, make_plan(cfg, 1), *optimizer_factories(cfg))


def _step(engine, ids: torch.Tensor, scale: float = 1.0) -> float:
    out = engine(ids[:, :-1].to(engine.device), targets=ids[:, 1:].to(engine.device))
    engine.backward(out.loss * scale)
    engine.step()
    return out.loss.item()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(single_rank, precision):
    engine = _engine(precision)
    ids = torch.randint(256, (4, 33), generator=torch.Generator().manual_seed(0))
    losses = [_step(engine, ids) for _ in range(20)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5


def test_fp16_overflow_skips_the_step_and_lowers_the_scale(single_rank):
    engine = _engine("fp16")
    ids = torch.randint(256, (4, 33), generator=torch.Generator().manual_seed(1))
    _step(engine, ids)
    scale, skipped = engine.optimizer.cur_scale, engine.skipped_steps
    before = [p.detach().clone() for p in engine.module.parameters()]
    for _ in range(2):  # hysteresis 2: the scale drops on the second overflow in a row
        _step(engine, ids, scale=float("inf"))  # every gradient overflows
    assert engine.skipped_steps == skipped + 2
    assert engine.optimizer.cur_scale < scale
    after = list(engine.module.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
