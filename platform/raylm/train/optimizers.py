"""The optimizers named by ``optim.name``, built over two parameter groups.

Weight decay applies to parameters with two or more dimensions (linear and embedding
weights), not to biases and norm gains (the nanoGPT/GPT-3 convention). ``train.lr`` is the
peak rate of every optimizer; the schedule (:func:`build_scheduler`) multiplies it.

======== ================================================ ===============================
name     update (torch's formulation unless noted)        paper
======== ================================================ ===============================
sgd      ``p -= lr g``                                    Robbins & Monro 1951
momentum ``b = mu b + g; p -= lr b`` (heavy ball)         Polyak 1964
nesterov ``b = mu b + g; p -= lr (g + mu b)``             Nesterov 1983, in the form of
                                                          Sutskever et al. 2013, eq. 3-4
adagrad  ``s += g^2; p -= lr g / (sqrt(s) + eps)``        Duchi et al. 2011
adadelta ``p -= lr * RMS[dx] / RMS[g] * g``, rho decays   Zeiler 2012, Algorithm 1 (the
         both averages                                    paper has no rate: lr = 1)
rmsprop  ``v = rho v + (1 - rho) g^2``; step              Tieleman & Hinton 2012,
         ``g / (sqrt(v) + eps)`` through momentum         lecture 6e
adam     bias-corrected first and second moments          Kingma & Ba 2015, Algorithm 1
adamw    Adam with decoupled weight decay                 Loshchilov & Hutter 2019, Alg. 2
nadam    Adam with a Nesterov first moment, decoupled     Dozat 2016; decay as in
         weight decay (torch ``decoupled_weight_decay``)  Loshchilov & Hutter 2019
lion     ``p -= lr sign(b1 m + (1 - b1) g)``              Chen et al. 2023, Algorithm 2
======== ================================================ ===============================

Weight decay: ``adamw``, ``nadam`` and ``lion`` decay the weights directly
(``p *= 1 - lr wd``, Loshchilov & Hutter 2019). The others add ``wd p`` to the gradient (an
L2 penalty, as their papers and torch do): for sgd, momentum and nesterov that is the same
as decoupled decay; for the adaptive ones (adagrad, adadelta, rmsprop, adam) the penalty is
rescaled per coordinate, the difference AdamW was introduced to remove.
"""

from __future__ import annotations

import torch
from torch import nn

from raylm.config import RunConfig
from raylm.train.schedules import lr_multiplier


class Lion(torch.optim.Optimizer):
    """``c = sign(b1 m + (1 - b1) g)``; ``p -= lr (c + wd p)``; ``m = b2 m + (1 - b2) g``
    (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2)."""

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
    """``[matrices with weight_decay, the rest (biases, norm gains) with none]``."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``optim.name``'s optimizer over :func:`parameter_groups` of ``model`` (table above)."""
    opt, lr = cfg.optim, cfg.train.lr
    groups = parameter_groups(model, opt.weight_decay)
    name = opt.name
    if name in ("sgd", "momentum", "nesterov"):
        return torch.optim.SGD(groups, lr=lr, momentum=0.0 if name == "sgd" else opt.momentum,
                               nesterov=name == "nesterov")
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr, eps=opt.eps)
    if name == "adadelta":
        return torch.optim.Adadelta(groups, lr=lr, rho=opt.rho, eps=opt.eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=opt.rho, eps=opt.eps, momentum=opt.momentum)
    if name == "adam":  # L2 penalty in the gradient, as in the original Adam
        return torch.optim.Adam(groups, lr=lr, betas=opt.betas, eps=opt.eps)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=opt.betas, eps=opt.eps)
    if name == "nadam":
        return torch.optim.NAdam(groups, lr=lr, betas=opt.betas, eps=opt.eps, decoupled_weight_decay=True)
    if name == "lion":
        return Lion(groups, lr=lr, betas=opt.betas)
    raise ValueError(f"unknown optimizer {name!r}")


def build_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    train, opt = cfg.train, cfg.optim
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_multiplier(step, train.max_steps, train.warmup_steps, opt.schedule, opt.min_lr_ratio,
                                   opt.decay_fraction),
    )


def optimizer_factories(cfg):
    """(model -> optimizer, optimizer -> scheduler) for ``cfg``: what the parallel room's engine builder takes."""
    return (lambda model: build_optimizer(cfg, model)), (lambda optimizer: build_scheduler(cfg, optimizer))
