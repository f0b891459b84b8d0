"""Per-rank memory for model states under ZeRO: the paper's formula (Rajbhandari et al. 2020,
"ZeRO", section 3.1 and Figure 1) plus the buffers DeepSpeed's implementation adds to it.

The paper (:func:`zero_model_states`): with ``psi`` parameters, mixed-precision training keeps
2-byte parameters and gradients plus ``K`` bytes of optimizer state per parameter (an fp32
master copy, 4 bytes, and 4 bytes per optimizer moment: ``K = 12`` for Adam). Pure fp32 keeps
4-byte parameters and gradients and no master copy. ZeRO stage 1 partitions the optimizer
state over the ``N_d`` data-parallel ranks, stage 2 also the gradients, stage 3 also the
parameters. Pipeline stages each hold about ``1/pp`` of the model. Activations are not included.

DeepSpeed holds more than that at its peak (:func:`deepspeed_buffers`; ``deepspeed/runtime/
zero/stage_1_and_2.py``, ``stage3.py``, ``engine.py``), and :func:`zero_memory`, what ``raylm
plan`` prints, adds it. ``bench/zero_memory.py`` measured the peak on 2 CPU workers (fp32,
AdamW, a 29M-parameter GPT): the paper's model states are 16, 12, 10 and 8 bytes per
parameter for stages 0-3 against a measured 20.4, 18.4, 18.4 and 23.1 (0.78x to 0.35x of it);
with the buffers below the estimate is 20, 18, 18 and 20 (0.98x, 0.98x, 0.98x, 0.86x).

* ZeRO-0: the gradient all-reduce flattens every gradient into one buffer (a second copy of
  the gradients while it runs).
* ZeRO-1 and 2: the optimizer steps on an fp32 gradient partition (``4 psi / N_d``; at stage 2
  it is the paper's gradient partition, held in fp32); even in fp32 training DeepSpeed clones
  the parameter partition as a master copy (``4 psi / N_d``); the optimizer step makes a
  partition-sized fp32 temporary (Adam's denominator); at stage 2 gradients wait in the reduce
  bucket (``reduce_bucket_size`` elements, or the whole model when it is smaller) before they are
  reduced and partitioned. At stage 1 the gradients move into that bucket and take no more room.
* ZeRO-3: the same master copy and temporary, the reduce bucket, and the parameters gathered
  for the forward and backward passes, up to ``stage3_max_live_parameters`` of them.

Tensor parallelism (``tp``) divides the split layers' parameters over its group (the rest is
replicated: :func:`raylm.model.counting.tensor_parallel_split_params`), and ZeRO then partitions over
the ranks holding the same tensor shard (``dp * sp``); sequence parallelism (``sp``) splits no
parameter. Activations (:func:`activation_bytes`) follow Korthikanti et al. (2022), "Reducing
Activation Recomputation in Large Transformer Models", section 4.1: ``s b h (34 + 5 a s / h)``
bytes per layer with 2-byte activations, ``s b h (10 + 24 / t + 5 a s / (h t))`` with tensor
parallelism of size ``t``. Ulysses sequence parallelism holds ``s / sp`` tokens per rank and the
attention scores of ``a / sp`` heads over whole sequences, so every term is divided by ``sp``.

The gradient buffers count as gradients, the master copy and temporaries as optimizer state,
the gathered parameters as parameters. The buffers were measured for fp32 on CPU; mixed
precision uses the same terms with 2-byte gradients and parameters (not measured here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

OPTIMIZER_MOMENTS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "adadelta": 2, "adam": 2, "adamw": 2,
                     "nadam": 2, "lion": 1}
# raylm.parallel.deepspeed_config sets reduce_bucket_size to this for ZeRO >= 1 (tests/unit/test_plan.py checks)
REDUCE_BUCKET_ELEMENTS = int(5e7)
MAX_LIVE_PARAMETERS = int(1e9)  # DeepSpeed's default stage3_max_live_parameters


@dataclass(frozen=True)
class MemoryEstimate:
    params_bytes: float
    grads_bytes: float
    optimizer_bytes: float
    offloaded_bytes: float  # optimizer state moved to host memory by ZeRO-Offload
    buffers: dict[str, float] = field(default_factory=dict)  # DeepSpeed's part of the three figures above

    @property
    def total_bytes(self) -> float:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes

    @property
    def peak_bytes(self) -> float:
        """The estimated peak per rank (model states and DeepSpeed's buffers; no activations)."""
        return self.total_bytes

    @property
    def model_states_bytes(self) -> float:
        """The paper's part: :attr:`total_bytes` less DeepSpeed's buffers."""
        return self.total_bytes - sum(v for k, v in self.buffers.items() if not k.startswith("offloaded"))


def optimizer_moments(name: str, momentum: float = 0.0) -> int:
    """Per-parameter state tensors of ``optim.name`` (``raylm.train.optimizers``); rmsprop adds a
    momentum buffer when ``momentum > 0``."""
    if name in OPTIMIZER_MOMENTS:
        return OPTIMIZER_MOMENTS[name]
    if name == "rmsprop":
        return 1 + (1 if momentum else 0)
    raise ValueError(f"unknown optimizer {name!r}")


def zero_model_states(params: int, dp: int, pp: int, zero_stage: int, precision: str, moments: int,
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


def deepspeed_buffers(params: int, dp: int, pp: int, zero_stage: int, precision: str, moments: int) -> dict[str, float]:
    """Bytes per rank DeepSpeed holds beyond the paper's model states at its peak (module docstring),
    by kind: keys starting ``grads/``, ``optimizer/`` or ``params/`` say which figure each adds to."""
    psi = params / pp
    mixed = precision in ("bf16", "fp16")
    grad_bytes = 2 if mixed else 4
    if zero_stage == 0:
        return {"grads/allreduce_flat_copy": grad_bytes * psi}
    out = {}
    if zero_stage == 1:
        out["grads/fp32_partition"] = 4 * psi / dp
    else:  # the paper's grad_bytes * psi / dp partition is held in fp32
        out["grads/fp32_partition"] = (4 - grad_bytes) * psi / dp
        out["grads/reduce_bucket"] = grad_bytes * min(psi, REDUCE_BUCKET_ELEMENTS)
    if not mixed:
        out["optimizer/fp32_master_partition"] = 4 * psi / dp
    if moments:
        out["optimizer/step_temporaries"] = 4 * psi / dp
    if zero_stage >= 3:
        weight_bytes = grad_bytes
        out["params/gathered"] = weight_bytes * min(psi, MAX_LIVE_PARAMETERS)
    return {k: v for k, v in out.items() if v}


def zero_memory(params: int, dp: int, pp: int, zero_stage: int, precision: str, moments: int,
                offload_optimizer: bool = False) -> MemoryEstimate:
    """Peak bytes per rank for parameters, gradients and optimizer state: the paper's model states
    (:func:`zero_model_states`) plus DeepSpeed's buffers (:func:`deepspeed_buffers`). With
    ``offload_optimizer`` the optimizer's buffers go to host memory with its state."""
    states = zero_model_states(params, dp, pp, zero_stage, precision, moments, offload_optimizer)
    buffers = deepspeed_buffers(params, dp, pp, zero_stage, precision, moments)
    if offload_optimizer:
        buffers = {(f"offloaded/{k}" if k.startswith("optimizer/") else k): v for k, v in buffers.items()}
    added = {kind: sum(v for k, v in buffers.items() if k.startswith(kind + "/"))
             for kind in ("params", "grads", "optimizer", "offloaded")}
    return MemoryEstimate(states.params_bytes + added["params"], states.grads_bytes + added["grads"],
                          states.optimizer_bytes + added["optimizer"], states.offloaded_bytes + added["offloaded"],
                          buffers)


def tensor_parallel_params(params: int, split: int, tp: int) -> float:
    """Parameters per rank: the ``split`` ones divided over the tensor group, the rest replicated."""
    return params - split + split / tp


def activation_bytes(seq_len: int, micro_batch: int, d_model: int, n_heads: int, n_layers: int, vocab_size: int,
                     precision: str, tp: int = 1, sp: int = 1, checkpointing: bool = False) -> float:
    """Bytes of activations one rank keeps for the backward pass of one micro-batch (module docstring):
    the layers' (Korthikanti et al. 2022, eq. 1 and 2, scaled from 2-byte to 4-byte activations in fp32)
    plus the logits and their fp32 softmax for the loss. With activation checkpointing each layer keeps
    only its input and one layer's activations are recomputed at a time."""
    s, b, h, a = seq_len, micro_batch, d_model, n_heads
    scale = 1.0 if precision in ("bf16", "fp16") else 2.0
    per_layer = scale * s * b * h * (10 + 24 / tp + 5 * a * s / (h * tp)) / sp
    layers = (n_layers * scale * 2 * s * b * h / sp + per_layer) if checkpointing else n_layers * per_layer
    logits = 2 * 4 * s * b * vocab_size / sp  # the head's output and the loss's fp32 softmax
    return layers + logits
