"""Stochastic weight averaging: an equal running average of the weights along the trajectory.

Izmailov et al. (2018), "Averaging Weights Leads to Wider Optima and Better Generalization",
Algorithm 1: ``w_swa <- (w_swa * n + w) / (n + 1)`` for every weight vector ``w`` that is
averaged, ``n`` of them so far. Here every optimizer step from a start step on adds its weights
(the paper averages once per cycle of a cyclical or constant rate; a constant or ``wsd``
schedule is closest to its setting). The models have no batch norm, so the paper's
recomputation of batch-norm statistics has nothing to do.

The rule, exactly: optimizer steps are counted from 1 (``step`` is the number of steps taken),
and the weights after step ``step`` join the average when
``step >= start_step = max(1, ceil(swa_start_fraction * max_steps))``, the product taken in
decimal as the fraction is written (0.7 * 10 is 7, not 7.000000000000001). With
``max_steps = 4`` and fraction 0.5 the weights after steps 2, 3 and 4 are averaged. An fp16
step that overflowed (DeepSpeed skips it) still counts: its unchanged weights are added again.

The average is kept in fp32 (whatever the parameters' dtype), one copy per rank; it is
evaluated and exported in place of the trained weights through :meth:`WeightAverage.swapped_in`.
Pure torch: the worker loop (:mod:`raylm.train.loop`) and checkpoints decide when and where.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from fractions import Fraction

import torch
from torch import nn


def swa_start_step(fraction: float, max_steps: int) -> int:
    """The first step whose weights are averaged: ``max(1, ceil(fraction * max_steps))``."""
    return max(1, math.ceil(Fraction(repr(fraction)) * max_steps))


def run_weight_average(module: nn.Module, cfg) -> WeightAverage | None:
    """The average a run keeps of ``module`` (a ``RunConfig``'s ``optim.swa``), or None when it is off.
    The parallel plan has checked that every rank holds all of the parameters."""
    if not cfg.optim.swa:
        return None
    return WeightAverage(module, swa_start_step(cfg.optim.swa_start_fraction, cfg.train.max_steps))


class WeightAverage:
    """Equal-weight running average of ``module``'s parameters from ``start_step`` on."""

    def __init__(self, module: nn.Module, start_step: int):
        if start_step < 1:
            raise ValueError(f"start_step counts optimizer steps from 1, got {start_step}")
        self.module, self.start_step, self.count = module, start_step, 0
        self.params = dict(module.named_parameters())
        self.average = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in self.params.items()}

    @torch.no_grad()
    def update(self, step: int) -> bool:
        """Call after optimizer step ``step`` (1-based); adds the weights if ``step >= start_step``."""
        if step < self.start_step:
            return False
        self.count += 1
        for name, p in self.params.items():
            average = self.average[name]
            average.add_(p.detach().float() - average, alpha=1.0 / self.count)  # (avg * (n-1) + w) / n
        return True

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[nn.Module]:
        """The module holding the averaged weights inside the block, its own weights restored after
        it (also on an error). Before anything was averaged the module is left as it is."""
        if self.count == 0:
            yield self.module
            return
        with torch.no_grad():
            trained = {name: p.detach().clone() for name, p in self.params.items()}
            for name, p in self.params.items():
                p.copy_(self.average[name])
        try:
            yield self.module
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(trained[name])

    def state_dict(self) -> dict:
        """Tensors and counters only, so ``torch.load(..., weights_only=True)`` reads it back."""
        return {"count": self.count, "start_step": self.start_step,
                "average": {name: t.clone() for name, t in self.average.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Continue a saved average exactly; it must be of the same parameters and start step."""
        if state["start_step"] != self.start_step:
            raise ValueError(f"the saved weight average starts at step {state['start_step']}, this run's at step "
                             f"{self.start_step} (optim.swa_start_fraction * train.max_steps); resume with the same "
                             f"values or set optim.swa=false")
        saved, own = set(state["average"]), set(self.average)
        if saved != own:
            raise ValueError(f"the saved weight average holds other parameters: missing {sorted(own - saved)}, "
                             f"unexpected {sorted(saved - own)}")
        for name, tensor in state["average"].items():
            if tensor.shape != self.average[name].shape:
                raise ValueError(f"saved average of {name} has shape {tuple(tensor.shape)}, the parameter "
                                 f"{tuple(self.average[name].shape)}")
            self.average[name].copy_(tensor)
        self.count = int(state["count"])
