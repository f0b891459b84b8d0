"""What one rank of a plan holds: model states (:func:`raylm.parallel.memory.zero_memory` on the
rank's share of the parameters) and activations (:func:`raylm.parallel.memory.activation_bytes`),
for ``raylm plan`` and ``bench/zero_memory.py``."""

from __future__ import annotations

from dataclasses import dataclass

from raylm.config import RunConfig
from raylm.model.counting import count_params, tensor_parallel_split_params
from raylm.parallel.memory import (
    MemoryEstimate,
    activation_bytes,
    optimizer_moments,
    tensor_parallel_params,
    zero_memory,
)
from raylm.parallel.plan import ParallelPlan


@dataclass(frozen=True)
class RankMemory:
    params_per_rank: float     # parameters this rank holds before ZeRO partitions them
    states: MemoryEstimate     # parameters, gradients, optimizer state and DeepSpeed's buffers
    activations_bytes: float   # one micro-batch's activations kept for the backward pass

    @property
    def total_bytes(self) -> float:
        return self.states.total_bytes + self.activations_bytes


def rank_memory(cfg: RunConfig, plan: ParallelPlan) -> RankMemory:
    model = cfg.model
    params = count_params(model).total
    split = tensor_parallel_split_params(model) if plan.tp > 1 else 0
    per_rank = tensor_parallel_params(params, split, plan.tp)
    moments = optimizer_moments(cfg.optim.name, cfg.optim.momentum)
    # ZeRO partitions over the ranks that hold the same tensor shard: the data and sequence ranks
    states = zero_memory(per_rank, plan.dp * plan.sp, plan.pp, plan.zero_stage, plan.precision, moments,
                         cfg.parallel.offload_optimizer)
    layers = model.n_layers + (model.n_decoder_layers if model.arch == "t5" else 0)
    activations = activation_bytes(plan.seq_len, plan.micro_batch, model.d_model, model.n_heads,
                                   -(-layers // plan.pp), model.vocab_size, plan.precision, plan.tp, plan.sp,
                                   cfg.parallel.activation_checkpointing)
    return RankMemory(per_rank, states, activations)
