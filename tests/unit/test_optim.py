"""Learning-rate schedules and optimizers."""

from __future__ import annotations

import math

import pytest
import torch

from raylm.config import RunConfig
from raylm.train.optimizers import Lion, build_optimizer, build_scheduler, parameter_groups
from raylm.train.schedules import lr_multiplier


def test_cosine_warms_up_then_decays_to_the_floor():
    values = [lr_multiplier(s, 100, 10, "cosine", 0.1) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[9:], values[10:], strict=False))
    halfway = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))
    assert lr_multiplier(10 + 45, 100, 10, "cosine", 0.1) == pytest.approx(halfway)
    assert lr_multiplier(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)


def test_wsd_is_flat_then_decays_linearly():
    values = [lr_multiplier(s, 100, 10, "wsd", 0.0, decay_fraction=0.2) for s in range(100)]
    assert values[10:80] == [1.0] * 70
    assert values[99] == pytest.approx(0.0)
    assert values[89] == pytest.approx(0.5)


def test_constant_and_unknown():
    assert lr_multiplier(50, 100, 10, "constant", 0.1) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_multiplier(50, 100, 10, "linear", 0.1)


def test_lion_matches_the_paper_update():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5))
    expected, m = p.detach().clone(), torch.zeros(5)
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.01)
    for _ in range(3):
        grad = torch.randn(5)
        p.grad = grad.clone()
        opt.step()
        update = torch.sign(0.9 * m + 0.1 * grad)
        expected = expected * (1 - 0.1 * 0.01) - 0.1 * update
        m = 0.99 * m + 0.01 * grad
    torch.testing.assert_close(p.detach(), expected)


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "rmsprop", "adagrad", "lion"])
def test_every_optimizer_reduces_a_quadratic(name):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    cfg = RunConfig.from_dict({"optim": {"name": name, "weight_decay": 0.0}, "train": {"lr": 0.02, "warmup_steps": 0}})
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    first = None
    for _ in range(50):
        loss = ((model(x) - y) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert loss.item() < first


def test_weight_decay_skips_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    decay, no_decay = parameter_groups(model, 0.1)
    assert [p.dim() for p in decay["params"]] == [2]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3


def test_nesterov_needs_sgd_with_momentum():
    from raylm.errors import ConfigError

    with pytest.raises(ConfigError, match="nesterov needs"):
        RunConfig.from_dict({"optim": {"name": "adamw", "nesterov": True}})
    RunConfig.from_dict({"optim": {"name": "sgd", "nesterov": True, "momentum": 0.9}})
