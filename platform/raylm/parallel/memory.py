"""Per-rank memory for model states under ZeRO (Rajbhandari et al. 2020, "ZeRO", section 3.1
and Figure 1).

With ``psi`` parameters, mixed-precision training keeps 2-byte parameters and gradients
plus ``K`` bytes of optimizer state per parameter (an fp32 master copy, 4 bytes, and 4 bytes
per optimizer moment: ``K = 12`` for Adam). Pure fp32 keeps 4-byte parameters and gradients
and no master copy. ZeRO stage 1 partitions the optimizer state over the ``N_d``
data-parallel ranks, stage 2 also the gradients, stage 3 also the parameters. Pipeline
stages each hold about ``1/pp`` of the model. Activations are not included.
"""

from __future__ import annotations

from dataclasses import dataclass

OPTIMIZER_MOMENTS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "adadelta": 2, "adam": 2, "adamw": 2,
                     "nadam": 2, "lion": 1}


@dataclass(frozen=True)
class MemoryEstimate:
    params_bytes: float
    grads_bytes: float
    optimizer_bytes: float
    offloaded_bytes: float  # optimizer state moved to host memory by ZeRO-Offload
    working_bytes: float = 0.0  # placeholder

    @property
    def total_bytes(self) -> float:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes

    @property
    def peak_bytes(self) -> float:
        return self.total_bytes + self.working_bytes


def optimizer_moments(name: str, momentum: float = 0.0) -> int:
    """Per-parameter state tensors of ``optim.name`` (``raylm.train.optimizers``); rmsprop adds a
    momentum buffer when ``momentum > 0``."""
    if name in OPTIMIZER_MOMENTS:
        return OPTIMIZER_MOMENTS[name]
    if name == "rmsprop":
        return 1 + (1 if momentum else 0)
    raise ValueError(f"unknown optimizer {name!r}")


def zero_memory(params: int, dp: int, pp: int, zero_stage: int, precision: str, moments: int,
                offload_optimizer: bool = False) -> MemoryEstimate:
    """Bytes per rank for parameters, gradients and optimizer state (ZeRO paper, Figure 1)."""
    psi = params / pp
    mixed = precision in ("bf16", "fp16")
    weight_bytes = 2 if mixed else 4
    state_bytes = (4 if mixed else 0) + 4 * moments  # K
    params_b, grads_b, optim_b = psi * weight_bytes, psi * weight_bytes, psi * state_bytes
    if zero_stage >= 1:
        optim_b /= dp
    if zero_stage >= 2:
        grads_b /= dp
    if zero_stage >= 3:
        params_b /= dp
    offloaded = optim_b if offload_optimizer else 0.0
    return MemoryEstimate(params_b, grads_b, optim_b - offloaded, offloaded)
