"""The one typed config tree of a raylm run.

A run is described by :class:`RunConfig`, whose sections are plain pydantic
models: ``model``, ``data``, ``parallel``, ``optim``, ``train``, ``tracking``
(``sweep`` and ``scaling`` are reserved for studies). Every section rejects
unknown keys; values are type-checked and derived values are filled in once,
when the config is built. Loading from YAML and applying ``--section.key value``
overrides lives in :mod:`raylm.config_load`.

The config crosses process boundaries as a plain dict (Ray's
``train_loop_config``): ``RunConfig.from_dict(cfg.to_dict()) == cfg``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raylm.config_errors import invalid
from raylm.errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MoEConfig(Section):
    """Switch-style mixture of experts (Fedus et al. 2021; Zoph et al. 2022, ST-MoE)."""

    n_experts: int = Field(0, ge=0, description="Experts per MoE layer; 0 keeps every FFN dense.")
    every: int = Field(2, ge=1, description="Every k-th layer (1-based: layers k, 2k, ...) is MoE.")
    top_k: Literal[1, 2] = Field(1, description="1 = Switch routing, 2 = top-2 routing.")
    capacity_factor: float = Field(1.25, gt=0, description="Expert capacity multiplier in training.")
    eval_capacity_factor: float = Field(2.0, gt=0, description="Expert capacity multiplier in evaluation.")
    aux_loss_coef: float = Field(0.01, ge=0, description="Weight of the load-balancing loss (Switch eq. 4).")
    z_loss_coef: float = Field(0.001, ge=0, description="Weight of the router z-loss (ST-MoE eq. 5).")
    router_jitter: float = Field(0.0, ge=0, description="Multiplicative uniform noise on router inputs in training.")


class ModelConfig(Section):
    """Transformer shape and options shared by the GPT, BERT and T5 families."""

    arch: Literal["gpt", "bert", "t5"] = "gpt"
    vocab_size: int = Field(8192, ge=2)
    max_seq_len: int = Field(256, ge=1, description="Longest sequence the positional encoding supports.")
    d_model: int = Field(256, ge=1)
    n_layers: int = Field(4, ge=1, description="Layers (the encoder's, for T5).")
    n_decoder_layers: Optional[int] = Field(None, ge=1, description="T5 decoder layers; defaults to n_layers.")
    n_heads: int = Field(4, ge=1)
    n_kv_heads: Optional[int] = Field(None, ge=1, description="Grouped-query KV heads; defaults to n_heads.")
    d_ff: Optional[int] = Field(None, ge=1, description="FFN width; defaults to 4*d_model (8/3*d_model for swiglu).")
    activation: Literal["relu", "gelu", "gelu_tanh", "swiglu", "leaky_relu"] = "gelu"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_position: Literal["pre", "post"] = "pre"
    norm_eps: float = Field(1e-5, gt=0)
    pos_encoding: Literal["learned", "sinusoidal", "rope", "alibi", "none"] = "learned"
    rope_theta: float = Field(10000.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    attn_dropout: float = Field(0.0, ge=0, lt=1)
    bias: bool = True
    tie_embeddings: bool = True
    init_std: float = Field(0.02, gt=0)
    scaled_init: bool = Field(True, description="GPT-2 init: residual projections scaled by 1/sqrt(2*layers).")
    type_vocab_size: int = Field(2, ge=0, description="BERT segment embeddings (0 disables them).")
    nsp_head: bool = Field(False, description="BERT next-sentence-prediction head on [CLS].")
    moe: MoEConfig = Field(default_factory=MoEConfig)

    @model_validator(mode="after")
    def _derive_and_check(self) -> ModelConfig:
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.d_ff is None:
            d_ff = 4 * self.d_model if self.activation != "swiglu" else _swiglu_width(self.d_model)
            object.__setattr__(self, "d_ff", d_ff)
        if self.arch == "t5" and self.n_decoder_layers is None:
            object.__setattr__(self, "n_decoder_layers", self.n_layers)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
                f"try n_heads={_largest_divisor(self.d_model, self.n_heads)}"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.pos_encoding == "rope" and self.head_dim % 2:
            raise ValueError(f"rope needs an even head size; d_model/n_heads = {self.head_dim}")
        if self.moe.n_experts and self.moe.top_k > self.moe.n_experts:
            raise ValueError(f"moe.top_k ({self.moe.top_k}) exceeds moe.n_experts ({self.moe.n_experts})")
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def _swiglu_width(d_model: int) -> int:
    """8/3 * d_model rounded up to a multiple of 8 (Shazeer 2020, PaLM/LLaMA convention)."""
    return -(-(8 * d_model) // 3 // 8) * 8


def _largest_divisor(n: int, at_most: int) -> int:
    return max(k for k in range(1, at_most + 1) if n % k == 0)


class DataConfig(Section):
    """Where text comes from, how it is tokenized, and where the token shards go."""

    corpus: str = Field("stdlib", description="'stdlib' (the interpreter's own sources), a path, glob or URI.")
    format: Literal["auto", "text", "jsonl", "parquet"] = "auto"
    text_field: str = Field("text", description="Field (JSON Lines) or column (Parquet) holding the text.")
    tokenizer: str = Field("bpe", description="'bpe', 'wordpiece', 'unigram' to train one, or a tokenizer.json path.")
    tokenizer_sample_bytes: int = Field(20_000_000, ge=1, description="Corpus bytes used to train a tokenizer.")
    val_fraction: float = Field(0.02, ge=0, lt=1, description="Documents routed to validation by stable hash.")
    max_docs: Optional[int] = Field(None, ge=1, description="Read at most this many documents (smoke runs).")
    shards_dir: str = Field("data/tokens", description="Output directory of the tokenize pipeline.")
    num_sentinels: int = Field(100, ge=0, description="T5 sentinel tokens <extra_id_i> added to a trained tokenizer.")
    shard_size: int = Field(8192, ge=1, description="Packed sequences per Parquet shard file.")
    seed: int = Field(0, description="Seed of the loader's per-epoch shuffle.")


class ParallelConfig(Section):
    """How the run is spread over Ray Train workers and DeepSpeed's parallel groups."""

    num_workers: int = Field(2, ge=1, description="Ray Train workers (one DeepSpeed rank each).")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    zero_stage: int = Field(0, description="DeepSpeed ZeRO stage, 0-3.")
    pp: int = Field(1, ge=1, description="Pipeline-parallel stages.")
    ep: int = Field(1, ge=1, description="Expert-parallel group size.")
    tp: int = Field(1, ge=1, description="Tensor-parallel group size (Megatron-style: attention heads and MLP "
                    "columns split over the group; raylm.parallel.tensor).")
    sp: int = Field(1, ge=1, description="Sequence-parallel group size (DeepSpeed-Ulysses: each rank holds a slice "
                    "of every sequence; raylm.parallel.sequence).")
    offload_optimizer: bool = Field(False, description="ZeRO optimizer-state offload to CPU.")
    activation_checkpointing: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="'auto': bf16 on GPU, fp32 on CPU.")

    @model_validator(mode="after")
    def _check_stage(self) -> ParallelConfig:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        return self


class OptimConfig(Section):
    """Optimizer and learning-rate schedule (the peak rate is ``train.lr``)."""

    name: Literal["sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "nadam",
                  "lion"] = Field("adamw", description="sgd: plain SGD; momentum: heavy-ball SGD; nesterov: SGD with "
                                  "Nesterov momentum; the rest as named (raylm.train.optimizers).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="Adam, AdamW, NAdam and Lion moment decays.")
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.1, ge=0, description="On matrices only; decoupled for adamw, nadam and lion.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum of momentum, nesterov and rmsprop.")
    rho: float = Field(0.9, gt=0, lt=1, description="Decay of the squared-gradient average: adadelta's rho, "
                       "rmsprop's alpha (0.9 in Zeiler 2012 and Tieleman & Hinton 2012).")
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine floor as a fraction of lr (Chinchilla: 10x).")
    decay_fraction: float = Field(0.2, gt=0, le=1, description="WSD: final fraction of steps spent decaying.")
    swa: bool = Field(False, description="Evaluate and export a stochastic weight average of the parameters "
                      "(Izmailov et al. 2018; raylm.train.swa).")
    swa_start_fraction: float = Field(0.75, ge=0, lt=1, description="Average the weights after every optimizer "
                                      "step from step ceil(fraction * train.max_steps) on (at least step 1).")

    @model_validator(mode="after")
    def _check_momentum(self) -> OptimConfig:
        if self.name in ("momentum", "nesterov") and self.momentum <= 0:
            raise ValueError(f"optim.name: {self.name} needs optim.momentum > 0 (got {self.momentum}); "
                             "use optim.name: sgd for SGD without momentum")
        return self


class TrainConfig(Section):
    """Steps, batch sizes, learning rate and how often to log, evaluate and checkpoint."""

    lr: float = Field(3e-4, gt=0, description="Peak learning rate.")
    warmup_steps: int = Field(20, ge=0)
    max_steps: int = Field(200, ge=1)
    micro_batch_size: int = Field(8, ge=1, description="Sequences per rank per forward pass.")
    global_batch_size: int = Field(16, ge=1, description="Sequences per optimizer step, all ranks together.")
    seq_len: int = Field(128, ge=1, description="Tokens per training sequence.")
    grad_clip: float = Field(1.0, ge=0, description="Max global gradient norm; 0 disables clipping.")
    seed: int = 0
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(50, ge=1)
    eval_batches: int = Field(8, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    peak_tflops: Optional[float] = Field(None, gt=0, description="Per-device peak for MFU; measured when unset.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept in storage (the newest).")
    max_failures: int = Field(0, ge=-1, description="Worker-group restarts from the latest checkpoint; -1: forever.")
    export_model: bool = Field(True, description="Write the portable model (safetensors, config, tokenizer) to "
                               "<run>/model at the end. A study's grid points skip it (the fit reads their curves); "
                               "its verification runs keep it.")
    compile: bool = Field(
        False, description="Run the model through torch.compile (Inductor) inside the DeepSpeed engine: the same "
        "losses, a one-off compile at the first step. Off by default: on a 2-core CPU the tiny GPT ran 1.05x faster "
        "after a 26 s compile (bench/compile_speedup.py), earned back only after ~3,800 steps; it is meant for "
        "GPUs. Not with parallel.pp > 1."
    )


class FaultsConfig(Section):
    """Fault injection for testing recovery: kill one worker process once, poison the loss, or slow every step."""

    kill_rank: Optional[int] = Field(None, ge=0, description="Rank whose process exits abruptly (once).")
    kill_at_step: Optional[int] = Field(None, ge=1, description="Optimizer step before which it exits.")
    nan_at_step: Optional[int] = Field(None, ge=1, description="Make the loss NaN at this step (divergence test).")
    step_delay_s: float = Field(0.0, ge=0, description="Sleep this long before every optimizer step: a slow run, "
                                "for checking what happens while it trains (a tracking outage, a killed driver).")


DEFAULT_TRACKING_DB = "mlflow.db"


def resolved_tracking_uri(uri: str | None, cwd: Path | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``; a SQLite path made absolute
    against ``cwd`` (default: the current directory): a relative one would resolve differently in
    every process that opens it. Absolute URIs come back unchanged."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_TRACKING_DB}"
    if uri.startswith("sqlite:///"):
        uri = f"sqlite:///{((cwd or Path.cwd()) / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


class TrackingConfig(Section):
    """MLflow tracking: where runs go and under which experiment."""

    enabled: bool = True
    tracking_uri: Optional[str] = Field(
        None, description="MLflow URI; defaults to $MLFLOW_TRACKING_URI, then sqlite:///mlflow.db. Resolved "
        "once, when the config is built: a relative SQLite path is made absolute against the directory of the "
        "process that builds it (the driver), so every worker opens the same file.", validate_default=True
    )
    experiment: str = "raylm"
    run_name: Optional[str] = None
    outbox_dir: str = Field(
        "runs/tracking-outbox", validate_default=True,
        description="Where records the store did not take wait (one file per run, on the driver's node) until "
        "they are delivered; `raylm tracking replay DIR` delivers what a finished run left. Made absolute "
        "against the driver's directory when the config is built."
    )
    log_model: bool = Field(
        False, description="Log the exported model (train.export_model) as the run's MLflow logged model, its "
        "files copied into the tracking store's artifacts. A study's verification runs set it; elsewhere the "
        "model stays where it was written (<output_dir>/<run>/model), without a copy."
    )
    system_metrics_every_s: float = Field(
        10.0, ge=0, description="Seconds between samples of CPU, memory, disk, network and GPU use, logged by "
        "the first worker of each node as system/... metrics (MLflow's names); 0 turns them off."
    )

    @field_validator("tracking_uri")
    @classmethod
    def _resolve_uri(cls, uri: str | None) -> str:
        return resolved_tracking_uri(uri)

    @field_validator("outbox_dir")
    @classmethod
    def _absolute_outbox(cls, path: str) -> str:
        return str(Path(path).expanduser().resolve())


class RunConfig(Section):
    """A whole run: name, output location and one section per concern."""

    name: str = "raylm"
    output_dir: str = Field("runs", description="Checkpoints and run artifacts go under output_dir/name.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    faults: FaultsConfig = Field(default_factory=FaultsConfig)

    @model_validator(mode="after")
    def _check_cross_section(self) -> RunConfig:
        if self.train.seq_len > self.model.max_seq_len:
            raise ValueError(
                f"train.seq_len ({self.train.seq_len}) exceeds model.max_seq_len ({self.model.max_seq_len}); "
                "raise model.max_seq_len or lower train.seq_len"
            )
        faults = self.faults
        if (faults.kill_rank is None) != (faults.kill_at_step is None):
            raise ValueError("faults.kill_rank and faults.kill_at_step go together; set both or neither")
        if faults.kill_rank is not None and faults.kill_rank >= self.parallel.num_workers:
            raise ValueError(f"faults.kill_rank ({faults.kill_rank}) must be below parallel.num_workers "
                             f"({self.parallel.num_workers})")
        return self

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON- and YAML-safe dict (lists for tuples) that :meth:`from_dict` restores."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> RunConfig:
        """Validate a plain dict into a config; raises :class:`ConfigError` with readable messages."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise invalid(exc, cls, source, "config") from None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}} -> {"train.lr": 1}`` (the form MLflow params and overrides use)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


__all__ = [
    "ConfigError",
    "DataConfig",
    "FaultsConfig",
    "MoEConfig",
    "ModelConfig",
    "OptimConfig",
    "ParallelConfig",
    "RunConfig",
    "TrackingConfig",
    "TrainConfig",
    "flatten",
]
