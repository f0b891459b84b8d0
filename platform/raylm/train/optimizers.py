"""Optimizers named in the config, with decoupled weight decay on matrices only.

Weight decay applies to parameters with two or more dimensions (linear and embedding
weights), not to biases and norm gains (the nanoGPT/GPT-3 convention). Lion is
Chen et al. (2023), "Symbolic Discovery of Optimization Algorithms", Algorithm 2.
"""

from __future__ import annotations

import torch
from torch import nn

from raylm.config import RunConfig
from raylm.train.schedules import lr_multiplier


class Lion(torch.optim.Optimizer):
    """``c = sign(b1 m + (1 - b1) g)``; ``p -= lr (c + wd p)``; ``m = b2 m + (1 - b2) g``."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"Lion learning rate must be positive, got {lr}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = (m * beta1 + p.grad * (1 - beta1)).sign_()
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(update, alpha=-group["lr"])
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    opt, lr = cfg.optim, cfg.train.lr
    groups = parameter_groups(model, opt.weight_decay)
    if opt.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=opt.betas, eps=opt.eps)
    if opt.name == "adam":  # L2 penalty in the gradient, as in the original Adam
        return torch.optim.Adam(groups, lr=lr, betas=opt.betas, eps=opt.eps)
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=opt.momentum, nesterov=opt.nesterov)
    if opt.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=opt.momentum, eps=opt.eps)
    if opt.name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr, eps=opt.eps)
    if opt.name == "lion":
        return Lion(groups, lr=lr, betas=opt.betas)
    raise ValueError(f"unknown optimizer {opt.name!r}")


def build_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    train, opt = cfg.train, cfg.optim
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_multiplier(step, train.max_steps, train.warmup_steps, opt.schedule, opt.min_lr_ratio,
                                   opt.decay_fraction),
    )
