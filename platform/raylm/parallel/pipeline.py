"""Pipeline parallelism for GPT and BERT with DeepSpeed's ``PipelineModule``.

The model is rewritten as a flat sequence of layers built from its own classes: the
embeddings, one :class:`~raylm.model.blocks.Block` per layer, then the head (final norm,
BERT's MLM transform, the vocabulary projection). DeepSpeed cuts the sequence into
``pp`` stages of about equal parameter count and runs its 1F1B schedule over
``grad_accum`` micro-batches per step (PipeDream-Flush: Narayanan et al. 2021,
"Memory-Efficient Pipeline-Parallel DNN Training", section 2; GPipe: Huang et al. 2019).
Only the activation tensor ``(batch, seq, d_model)`` crosses stage boundaries, so there is
no attention mask: packed GPT blocks and BERT's unpadded MLM blocks need none.

Tied input and output embeddings are one ``TiedLayerSpec("embed", ...)``: the first and
last stage each hold a copy of :class:`~raylm.model.blocks.Embeddings`, the head uses its
``tokens.weight``, and DeepSpeed all-reduces the copies' gradients over the stages that
share them (``PipelineModule.allreduce_tied_weight_gradients``), so both stay equal.

Source: ``deepspeed/runtime/pipe/{module,engine}.py`` (DeepSpeed 0.19.8) and the DeepSpeed
pipeline tutorial (https://www.deepspeed.ai/tutorials/pipeline/).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from raylm.config import RunConfig
from raylm.model.blocks import Block, Embeddings, make_norm
from raylm.model.feedforward import activation_fn
from raylm.model.output import token_cross_entropy
from raylm.parallel.plan import ParallelPlan

TIED_KEY = "embed"
LABEL_KEYS = {"gpt": "targets", "bert": "mlm_labels"}


@dataclass(frozen=True)
class LayerEntry:
    """One pipeline layer: its ``LayerSpec``, and how its weights are named in the unsplit model.

    A stage module's key ``strip + rest`` is ``prefix + rest`` in ``build_model``'s state dict.
    ``owned`` is False for the head's copy of tied embeddings (exported from the embedding stage).
    """

    spec: Any
    prefix: str
    strip: str = ""
    owned: bool = True

    def reference_name(self, key: str) -> str:
        assert key.startswith(self.strip), (key, self.strip)
        return self.prefix + key[len(self.strip):]


class PipeEmbeddings(Embeddings):
    """:class:`Embeddings` fed the pipeline's first-stage input: ``ids`` or the tuple ``(ids,)``."""

    def forward(self, inputs) -> torch.Tensor:
        ids = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
        return super().forward(ids)


class PipeBlock(Block):
    """:class:`Block` as one pipeline layer: hidden state in, hidden state out (no MoE stats)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[0]


class FinalNorm(nn.Module):
    """The pre-norm models' final normalisation (``final_norm`` in GPT and BERT)."""

    def __init__(self, cfg):
        super().__init__()
        self.norm = make_norm(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class MLMTransform(nn.Module):
    """BERT's MLM transform before the vocabulary projection (Devlin et al. 2019, appendix A.1):
    dense, activation, norm; the parameter names are BERT's."""

    def __init__(self, cfg):
        super().__init__()
        self.mlm_dense = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.mlm_act = activation_fn(cfg.activation)
        self.mlm_norm = make_norm(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlm_norm(self.mlm_act(self.mlm_dense(x)))


class VocabBias(nn.Module):
    """The MLM head's output bias, a layer of its own when the projection weight is tied."""

    def __init__(self, cfg):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.bias


def tied_projection(embeddings: Embeddings, x: torch.Tensor) -> torch.Tensor:
    """The output projection with the input embedding matrix (Press & Wolf 2017)."""
    return F.linear(x, embeddings.tokens.weight)


def pipeline_layers(cfg: RunConfig) -> list[LayerEntry]:
    """The layer sequence for ``cfg.model``, each with the name prefix its weights have in
    :func:`raylm.model.build_model`'s state dict."""
    model = cfg.model
    if model.arch not in LABEL_KEYS:
        raise ValueError(f"pipeline parallelism supports gpt and bert, not {model.arch!r}; set parallel.pp=1")
    if model.moe.n_experts:
        raise ValueError("pipeline parallelism does not support MoE layers; set parallel.pp=1 or moe.n_experts=0")
    if model.arch == "bert" and model.nsp_head:
        raise ValueError("pipeline parallelism trains BERT's masked-LM objective only; set model.nsp_head: false")
    from deepspeed.pipe import LayerSpec, TiedLayerSpec

    segments = model.type_vocab_size if model.arch == "bert" else 0
    tied = model.tie_embeddings
    if tied:
        embed = TiedLayerSpec(TIED_KEY, PipeEmbeddings, model, segments=segments, tied_weight_attr=["tokens.weight"])
    else:
        embed = LayerSpec(PipeEmbeddings, model, segments=segments)
    layers = [LayerEntry(embed, "embed.")]
    layers += [LayerEntry(LayerSpec(PipeBlock, model, i, causal=model.arch == "gpt"), f"blocks.{i}.")
               for i in range(model.n_layers)]
    if model.norm_position == "pre":
        layers.append(LayerEntry(LayerSpec(FinalNorm, model), "final_norm.", strip="norm."))
    head_name = "lm_head." if model.arch == "gpt" else "mlm_head."
    if model.arch == "bert":
        layers.append(LayerEntry(LayerSpec(MLMTransform, model), ""))
    if tied:  # the head's copy of the embeddings is exported from the embedding stage, not from here
        layers.append(LayerEntry(TiedLayerSpec(TIED_KEY, PipeEmbeddings, model, segments=segments,
                                               forward_fn=tied_projection, tied_weight_attr=["tokens.weight"]),
                                 "embed.", owned=False))
        if model.arch == "bert":
            layers.append(LayerEntry(LayerSpec(VocabBias, model), head_name))
    else:
        layers.append(LayerEntry(LayerSpec(nn.Linear, model.d_model, model.vocab_size, bias=model.arch == "bert"),
                                 head_name))
    return layers


def build_pipeline_module(cfg: RunConfig, plan: ParallelPlan):
    """A ``deepspeed.pipe.PipelineModule`` of ``plan.pp`` stages whose weights equal those of
    ``build_model(cfg.model)`` after ``torch.manual_seed(cfg.train.seed)``.

    Every rank builds that reference model on the CPU (under a forked RNG, so the caller's
    random state is untouched) and copies the tensors of its own stage's layers: exact, and
    independent of how DeepSpeed partitions or of the RNG draws its partitioning makes.
    Call after ``deepspeed.init_distributed``; ``LOCAL_RANK`` must be set (Ray Train and the
    ``deepspeed`` launcher set it).
    """
    import functools

    from deepspeed.pipe import PipelineModule
    from torch.utils.checkpoint import checkpoint

    from raylm.model import build_model

    layers = pipeline_layers(cfg)
    module = PipelineModule(
        layers=[entry.spec for entry in layers], num_stages=plan.pp, loss_fn=token_cross_entropy,
        partition_method="parameters",
        activation_checkpoint_interval=1 if cfg.parallel.activation_checkpointing else 0,
        # torch's non-reentrant checkpoint of the blocks only: the embedding layer's input (token ids)
        # cannot require grad, so a reentrant checkpoint around it would cut its gradient.
        activation_checkpoint_func=functools.partial(checkpoint, use_reentrant=False),
        checkpointable_layers=[PipeBlock.__name__],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        reference = build_model(cfg.model).state_dict()
    with torch.no_grad():
        for entry, local in local_modules(module, layers):
            for key, tensor in local.state_dict().items():
                tensor.copy_(reference[entry.reference_name(key)])
    _count_every_stage_in_grad_norm(module)
    return module


def _count_every_stage_in_grad_norm(module) -> None:
    """Make DeepSpeed's fp32 gradient clipping see every stage's gradients.

    ``deepspeed.runtime.utils.clip_grad_norm_`` (used under ZeRO stage 0) counts a parameter
    only on model-parallel rank 0 unless it is marked ``model_parallel``, and the pipeline
    grid's model-parallel rank is the stage, so the norm would cover the first stage alone.
    Marking each stage's own parameters (not the non-owning copies of tied weights, which
    DeepSpeed flags ``ds_pipe_replicated``) gives the norm of the whole model, as in
    ``torch.nn.utils.clip_grad_norm_`` on the unsplit model. ZeRO stage 1 counts by tensor-parallel
    rank and skips replicated copies, and is unaffected.
    """
    for p in module.parameters():
        p.model_parallel = not getattr(p, "ds_pipe_replicated", False)


def local_modules(module, layers: list[LayerEntry]) -> Iterator[tuple[LayerEntry, nn.Module]]:
    """This stage's layers (those with weights) and the modules DeepSpeed built for them."""
    parts, stage = module.partitions(), module.stage_id
    for idx in range(parts[stage], parts[stage + 1]):
        entry = layers[idx]
        if hasattr(entry.spec, "key"):  # a TiedLayerSpec: one module per key and stage
            yield entry, module.tied_modules[entry.spec.key]
        else:
            yield entry, module.get_submodule(str(idx))


def stage_state_dict(module, layers: list[LayerEntry]) -> dict[str, torch.Tensor]:
    """CPU copies of this stage's own weights under the unsplit model's names."""
    return {entry.reference_name(key): tensor.detach().cpu().clone()
            for entry, local in local_modules(module, layers) if entry.owned
            for key, tensor in local.state_dict().items()}


def pipeline_item(inputs: dict[str, torch.Tensor]) -> tuple[tuple[torch.Tensor], torch.Tensor]:
    """``((ids,), labels)`` from :func:`raylm.train.batches.model_inputs`' GPT or BERT dict."""
    extra = sorted(set(inputs) - {"ids", *LABEL_KEYS.values()})
    labels = [inputs[k] for k in LABEL_KEYS.values() if k in inputs]
    if extra or "ids" not in inputs or len(labels) != 1:
        raise ValueError(f"a pipeline micro-batch is 'ids' and one of {sorted(LABEL_KEYS.values())}; got "
                         f"{sorted(inputs)} (inputs such as {extra or 'these'} cannot cross pipeline stages)")
    return (inputs["ids"],), labels[0]


def _items(engine, batches: list[dict[str, torch.Tensor]], exact: bool) -> list:
    if exact and len(batches) != engine.micro_batches:
        raise ValueError(f"a pipeline step takes gradient_accumulation_steps ({engine.micro_batches}) micro-batches, "
                         f"got {len(batches)}")
    return [pipeline_item(b) for b in batches]


def pipeline_train_step(engine, batches: list[dict[str, torch.Tensor]]) -> float:
    """One optimizer step over ``plan.grad_accum`` micro-batches (this replica's share).

    Every stage of a replica passes the same ``batches``: the first stage reads the inputs,
    the last the labels. Returns the global batch's loss (mean over micro-batches and
    data-parallel replicas), the same on every rank: DeepSpeed averages it on the last stage
    and broadcasts it over the pipeline (``PipelineEngine._aggregate_total_loss``).
    """
    return float(engine.train_batch(data_iter=iter(_items(engine, batches, exact=True))))


@torch.no_grad()
def pipeline_eval_loss(engine, batches: list[dict[str, torch.Tensor]]) -> float:
    """Mean loss over ``batches`` (any number) and the data-parallel replicas, the same on every rank.

    The micro-batches must have the training batches' shape: the stages reuse the receive
    buffers sized on the first step.
    """
    items = _items(engine, batches, exact=False)
    return float(engine.eval_batch(iter(items), num_micro_batches=len(items)))


def pipeline_coords(rank: int, plan: ParallelPlan) -> tuple[int, int]:
    """``(stage, data_parallel_rank)`` of global ``rank``: DeepSpeed's ``PipeDataParallelTopology``
    orders ranks pipe-major (``rank = stage * dp + data_rank``)."""
    return divmod(rank, plan.dp)


def data_parallel_rank_and_size(engine) -> tuple[int, int]:
    """This process's data-parallel rank and the number of replicas: shard data over these,
    so that every stage of one replica reads the same micro-batches."""
    return engine.grid.get_data_parallel_rank(), engine.grid.get_data_parallel_world_size()


def pipeline_state_dict(engine, cfg: RunConfig) -> dict[str, torch.Tensor] | None:
    """The trained weights under :func:`raylm.model.build_model`'s names, on global rank 0
    (``None`` elsewhere). Collective: every rank must call it.

    Data-parallel rank 0 of each stage sends its layers' tensors (CPU copies) to rank 0 with
    ``gather_object``; a tied output projection is filled from the embedding stage's matrix.
    """
    import torch.distributed as dist

    layers = pipeline_layers(cfg)
    local = stage_state_dict(engine.module, layers) if engine.grid.get_data_parallel_rank() == 0 else {}
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(local, gathered, dst=0)
    if dist.get_rank() != 0:
        return None
    state = {key: value for part in gathered for key, value in part.items()}
    if cfg.model.tie_embeddings:
        state["lm_head.weight" if cfg.model.arch == "gpt" else "mlm_head.weight"] = state["embed.tokens.weight"]
    return state
