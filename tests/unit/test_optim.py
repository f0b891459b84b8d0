"""Learning-rate schedules and optimizers."""

from __future__ import annotations

import math
import typing

import pytest
import torch

from raylm.config import OptimConfig, RunConfig
from raylm.errors import ConfigError
from raylm.parallel.memory import optimizer_moments
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


NAMES = typing.get_args(OptimConfig.model_fields["name"].annotation)

# A learning rate per optimizer that suits the small regression below (constant schedule, 50 steps).
# Adadelta uses Zeiler's eps (1e-6): with 1e-8 its first steps are 10x smaller and it barely starts.
LEARNING_RATES = {"sgd": 0.05, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.1, "adadelta": 1.0,
                  "rmsprop": 0.003, "adam": 0.01, "adamw": 0.01, "nadam": 0.01, "lion": 0.005}
EPS = {"adadelta": 1e-6}

# Non-default hyperparameters, so that a value build_optimizer forgot to pass shows as a mismatch.
HYPER = {"betas": (0.85, 0.98), "eps": 1e-7, "weight_decay": 0.1, "momentum": 0.8, "rho": 0.85}


class PaperLion:
    """Chen et al. (2023), Algorithm 2, written out again per group: the reference for ``lion``."""

    def __init__(self, groups, lr, betas):
        self.groups, self.lr, self.betas = groups, lr, betas
        self.m = {id(p): torch.zeros_like(p) for g in groups for p in g["params"]}

    @torch.no_grad()
    def step(self):
        b1, b2 = self.betas
        for group in self.groups:
            for p in group["params"]:
                m, g = self.m[id(p)], p.grad
                update = torch.sign(b1 * m + (1 - b1) * g) + group["weight_decay"] * p
                p.copy_(p - self.lr * update)
                self.m[id(p)] = b2 * m + (1 - b2) * g


def reference_optimizer(name: str, groups: list[dict], lr: float):
    """The same optimizer built directly from torch (Lion: the paper), with HYPER spelled out."""
    b, eps, mu, rho, LR = (0.85, 0.98), 1e-7, 0.8, 0.85, lr
    return {
        "sgd": lambda: torch.optim.SGD(groups, lr=LR),
        "momentum": lambda: torch.optim.SGD(groups, lr=LR, momentum=mu),
        "nesterov": lambda: torch.optim.SGD(groups, lr=LR, momentum=mu, nesterov=True),
        "adagrad": lambda: torch.optim.Adagrad(groups, lr=LR, eps=eps),
        "adadelta": lambda: torch.optim.Adadelta(groups, lr=LR, rho=rho, eps=eps),
        "rmsprop": lambda: torch.optim.RMSprop(groups, lr=LR, alpha=rho, eps=eps, momentum=mu),
        "adam": lambda: torch.optim.Adam(groups, lr=LR, betas=b, eps=eps),
        "adamw": lambda: torch.optim.AdamW(groups, lr=LR, betas=b, eps=eps),
        "nadam": lambda: torch.optim.NAdam(groups, lr=LR, betas=b, eps=eps, decoupled_weight_decay=True),
        "lion": lambda: PaperLion(groups, lr=LR, betas=b),
    }[name]()


def small_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def regression_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(128, 8, generator=generator)
    return x, x @ torch.randn(8, 1, generator=generator) + 0.5


def optim_config(name: str, lr: float, **optim) -> RunConfig:
    return RunConfig.from_dict({"optim": {"name": name, "schedule": "constant", **optim},
                                "train": {"lr": lr, "warmup_steps": 0, "max_steps": 50}})


def test_every_optimizer_name_is_tested():
    assert set(LEARNING_RATES) == set(NAMES)
    for name in NAMES:
        reference_optimizer(name, [{"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=0.1)


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_fits_a_small_regression(name):
    """A 8-16-1 tanh MLP on a noiseless linear target: 50 steps at the rate above cut the loss 4x."""
    model, (x, y) = small_mlp(), regression_data()
    cfg = optim_config(name, LEARNING_RATES[name], weight_decay=0.0, eps=EPS.get(name, 1e-8))
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt)
    losses = []
    for _ in range(50):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 4, f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_matches_its_reference_step_for_step(name):
    """build_optimizer against torch's own optimizer (Lion: the paper's Algorithm 2), built directly
    with the same hyperparameters and groups (decay on matrices only): parameters equal after each step.
    Torch's optimizers run the same code on both sides (bitwise equal in practice); the tolerance,
    1e-6 relative and 1e-8 absolute, leaves room only for the last bits of the paper-written Lion."""
    ours, theirs = small_mlp(), small_mlp()
    x, y = regression_data()
    lr = LEARNING_RATES[name]
    opt = build_optimizer(optim_config(name, lr, **HYPER), ours)
    decay = [p for p in theirs.parameters() if p.dim() >= 2]
    no_decay = [p for p in theirs.parameters() if p.dim() < 2]
    ref = reference_optimizer(name, [{"params": decay, "weight_decay": HYPER["weight_decay"]},
                                     {"params": no_decay, "weight_decay": 0.0}], lr)
    for step in range(5):
        for model, optimizer in ((ours, opt), (theirs, ref)):
            for p in model.parameters():
                p.grad = None
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        for (key, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8,
                                       msg=lambda m, key=key, step=step: f"{name} {key} after step {step + 1}: {m}")


@pytest.mark.parametrize("name", NAMES)
def test_memory_estimate_counts_each_optimizers_state(name):
    """``raylm plan``'s optimizer-state count equals the tensors the optimizer keeps per matrix."""
    model = small_mlp()
    opt = build_optimizer(optim_config(name, 0.01, **HYPER), model)
    torch.nn.functional.mse_loss(model(torch.randn(4, 8)), torch.zeros(4, 1)).backward()
    opt.step()
    matrix = model[0].weight
    kept = [v for v in opt.state[matrix].values() if torch.is_tensor(v) and v.shape == matrix.shape]
    assert len(kept) == optimizer_moments(name, HYPER["momentum"])

def test_weight_decay_skips_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    decay, no_decay = parameter_groups(model, 0.1)
    assert [p.dim() for p in decay["params"]] == [2]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3


def test_momentum_names_need_momentum_and_nesterov_is_a_name():
    with pytest.raises(ConfigError, match="optim.name: nesterov needs optim.momentum > 0"):
        RunConfig.from_dict({"optim": {"name": "nesterov", "momentum": 0.0}})
    with pytest.raises(ConfigError, match="nesterov"):
        RunConfig.from_dict({"optim": {"name": "sgd", "nesterov": True}})  # the old flag is gone
    RunConfig.from_dict({"optim": {"name": "sgd", "momentum": 0.0}})
