"""The parallel plan: how a run's batch and model are split over its workers.

``make_plan(cfg, world_size)`` derives data-parallel size, gradient accumulation and
precision, and rejects every impossible combination before any worker starts, each
problem with its numbers and a fix (in the spirit of torchtitan's ``ParallelDims``).
DeepSpeed itself rejects some of these with bare assertions deep inside; here they are
said first, in words.
"""

from __future__ import annotations

from dataclasses import dataclass

from raylm.config import RunConfig
from raylm.errors import UserError


class PlanError(UserError):
    """A parallel plan that cannot run; the message lists every problem found."""


@dataclass(frozen=True)
class ParallelPlan:
    world_size: int
    dp: int              # data-parallel replicas (world_size / (pp * tp * sp))
    pp: int              # pipeline stages
    ep: int              # expert-parallel group size (inside the data-parallel group)
    zero_stage: int
    micro_batch: int     # sequences per rank per forward pass
    grad_accum: int      # micro-batches per optimizer step
    global_batch: int    # sequences per optimizer step, all ranks
    seq_len: int
    precision: str       # fp32 | bf16 | fp16
    tp: int = 1          # tensor-parallel group size (raylm.parallel.tensor)
    sp: int = 1          # sequence-parallel group size (raylm.parallel.sequence)

    @property
    def model_parallel(self) -> bool:
        """Whether ranks hold parts of the model or of its sequences (tp or sp above 1)."""
        return self.tp > 1 or self.sp > 1

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len


def resolve_precision(cfg: RunConfig) -> str:
    """``auto`` is bf16 on GPU workers and fp32 on CPU workers."""
    if cfg.parallel.precision != "auto":
        return cfg.parallel.precision
    return "bf16" if cfg.parallel.use_gpu else "fp32"


def plan_problems(cfg: RunConfig, world_size: int) -> list[str]:
    """Every reason the plan cannot run, each with a fix; empty when it can."""
    par, train, model = cfg.parallel, cfg.train, cfg.model
    problems: list[str] = []
    split = par.pp * par.tp * par.sp
    if world_size % split:
        sizes = [f"{name}({size})" for name, size in (("tp", par.tp), ("sp", par.sp), ("pp", par.pp)) if size > 1]
        axes = sizes[0] if len(sizes) == 1 else f"{' * '.join(sizes)} = {split}"
        problems.append(f"{axes} does not divide the number of workers ({world_size}): tp * sp * pp * dp "
                        f"must equal num_workers; use num_workers={split * max(1, world_size // split)} or sizes "
                        f"whose product divides {world_size}")
    dp = max(1, world_size // split)
    per_step = train.micro_batch_size * dp
    if train.global_batch_size % per_step:
        fixed = -(-train.global_batch_size // per_step) * per_step
        problems.append(f"global_batch_size ({train.global_batch_size}) is not a multiple of micro_batch_size "
                        f"({train.micro_batch_size}) * dp ({dp}) = {per_step}; use global_batch_size={fixed}")
    if par.pp > 1 and par.zero_stage >= 2:
        problems.append(f"pipeline parallelism (pp={par.pp}) works with ZeRO stage 0 or 1 only (DeepSpeed's pipeline "
                        f"engine cannot partition gradients); set parallel.zero_stage=1 or parallel.pp=1")
    if par.pp > 1 and model.n_layers < par.pp:
        problems.append(f"model.n_layers ({model.n_layers}) is smaller than pp ({par.pp}): every stage needs a "
                        f"layer; use pp <= {model.n_layers}")
    if par.pp > 1 and model.arch == "t5":
        problems.append("pipeline parallelism supports gpt and bert; train t5 with parallel.pp=1")
    if par.pp > 1 and model.arch == "bert" and model.nsp_head:
        problems.append("pipeline stages pass only the hidden state, so BERT's next-sentence head cannot train "
                        "with pp > 1; set model.nsp_head=false or parallel.pp=1")
    if par.pp > 1 and train.compile:
        problems.append("train.compile works with parallel.pp = 1 only (DeepSpeed's pipeline engine runs the stages' "
                        "layers itself); set train.compile=false or parallel.pp=1")
    if par.pp > 1 and model.moe.n_experts:
        problems.append("pipeline parallelism with MoE layers is not supported; set parallel.pp=1 or "
                        "model.moe.n_experts=0")
    problems += tensor_sequence_problems(cfg)
    problems += _moe_problems(cfg, dp)
    problems += _swa_problems(cfg)
    if par.offload_optimizer and par.zero_stage == 0:
        problems.append("parallel.offload_optimizer needs ZeRO stage 1, 2 or 3; set parallel.zero_stage")
    precision = resolve_precision(cfg)
    if precision in ("bf16", "fp16") and not par.use_gpu:
        problems.append(f"precision {precision} needs GPU workers (parallel.use_gpu: true); on CPU use "
                        f"parallel.precision: fp32 (or auto)")
    return problems


def tensor_sequence_problems(cfg: RunConfig) -> list[str]:
    """What tensor (tp) and sequence (sp) parallelism need of the model and the rest of the plan."""
    par, model, train = cfg.parallel, cfg.model, cfg.train
    tp, sp = par.tp, par.sp
    if tp == 1 and sp == 1:
        return []
    problems = []
    if tp > 1:
        for what, key, count in (("attention heads", "model.n_heads", model.n_heads),
                                 ("key-value heads", "model.n_kv_heads", model.n_kv_heads),
                                 ("the MLP's hidden units", "model.d_ff", model.d_ff)):
            if count % tp:
                fix = f"{key}={-(-count // tp) * tp}" if key == "model.d_ff" else f"a {key} that is a multiple of {tp}"
                problems.append(f"tensor parallelism splits {what} ({count}) over tp={tp} ranks, but {tp} does not "
                                f"divide {count}; use a tp dividing {count}, or {fix}")
    if sp > 1:
        if train.seq_len % sp:
            problems.append(f"sequence parallelism gives each of sp={sp} ranks seq_len / sp tokens, but train.seq_len "
                            f"({train.seq_len}) does not divide by {sp}; use train.seq_len="
                            f"{-(-train.seq_len // sp) * sp} or an sp dividing {train.seq_len}")
        for what, key, count in (("attention heads", "model.n_heads", model.n_heads),
                                 ("key-value heads", "model.n_kv_heads", model.n_kv_heads)):
            per_tp = count // tp if count % tp == 0 else None
            if per_tp is not None and per_tp % sp:
                problems.append(f"sequence parallelism gives each of sp={sp} ranks whole sequences for a share of the "
                                f"{what}: {key} ({count}) / tp ({tp}) = {per_tp} does not divide by {sp}; use an "
                                f"sp dividing {per_tp}")
        if model.arch == "bert" and model.nsp_head:
            problems.append("BERT's next-sentence head reads the first token, which only one rank of a sequence "
                            "group holds; set model.nsp_head=false or parallel.sp=1")
    axes = " and ".join(f"{name}={size}" for name, size in (("tp", tp), ("sp", sp)) if size > 1)
    if model.arch == "t5":
        problems.append(f"{axes}: tensor and sequence parallelism support gpt and bert; train t5 with parallel.tp=1 "
                        f"and parallel.sp=1 (ZeRO and data parallelism work with t5)")
    if par.pp > 1:
        problems.append(f"{axes} with pipeline parallelism (pp={par.pp}) is not supported: the pipeline's stages "
                        f"are built without tensor or sequence groups; use parallel.pp=1, or parallel.tp=1 and "
                        f"parallel.sp=1")
    if model.moe.n_experts:
        problems.append(f"{axes} with MoE layers is not supported (experts are sharded over the data-parallel "
                        f"group by expert parallelism instead); set model.moe.n_experts=0, or parallel.tp=1 and "
                        f"parallel.sp=1")
    if par.zero_stage == 3:
        problems.append(f"{axes} with ZeRO stage 3 is not supported (ZeRO-3 partitions the parameters that tensor "
                        f"parallelism splits, and its gathers do not know the tensor group); use "
                        f"parallel.zero_stage 0, 1 or 2")
    if train.compile:
        problems.append(f"train.compile with {axes} is not supported (the layers' collectives run in autograd "
                        f"functions Inductor does not trace here); set train.compile=false")
    if tp > 1 and cfg.optim.swa:
        problems.append(f"optim.swa averages the full parameters on every rank, but with tp={tp} each rank holds "
                        f"a share of them; set parallel.tp=1 or optim.swa=false")
    return problems


def _moe_problems(cfg: RunConfig, dp: int) -> list[str]:
    par, moe = cfg.parallel, cfg.model.moe
    problems = []
    decoder_layers = cfg.model.n_decoder_layers if cfg.model.arch == "t5" else cfg.model.n_layers
    if moe.n_experts and moe.every > min(cfg.model.n_layers, decoder_layers):
        problems.append(f"model.moe.every ({moe.every}) exceeds the number of layers "
                        f"({min(cfg.model.n_layers, decoder_layers)}), so no layer would hold experts; use "
                        f"model.moe.every <= {min(cfg.model.n_layers, decoder_layers)}")
    if par.ep > 1 and not moe.n_experts:
        problems.append(f"parallel.ep={par.ep} shards experts, but the model has none; set model.moe.n_experts "
                        f"(a multiple of {par.ep}) or parallel.ep=1")
    if moe.n_experts and moe.n_experts % par.ep:
        problems.append(f"ep ({par.ep}) must divide model.moe.n_experts ({moe.n_experts}); use n_experts="
                        f"{-(-moe.n_experts // par.ep) * par.ep} or an ep dividing {moe.n_experts}")
    if dp % par.ep:
        problems.append(f"ep ({par.ep}) must divide the data-parallel size ({dp}); expert groups are formed inside "
                        f"it: use an ep dividing {dp}")
    if moe.n_experts and par.zero_stage == 3:
        problems.append("MoE layers cannot train under ZeRO stage 3 (DeepSpeed does not partition expert "
                        "parameters); set parallel.zero_stage to 0, 1 or 2")
    return problems


def _swa_problems(cfg: RunConfig) -> list[str]:
    """SWA (raylm.train.swa) averages each rank's full copy of the parameters."""
    par = cfg.parallel
    if not cfg.optim.swa:
        return []
    why = "optim.swa averages the full parameters on every rank, but"
    problems = []
    if par.zero_stage == 3:
        problems.append(f"{why} ZeRO stage 3 partitions them over the ranks; set parallel.zero_stage to 0, 1 or 2, "
                        "or optim.swa=false")
    if par.pp > 1:
        problems.append(f"{why} with pp={par.pp} each pipeline stage holds only its own layers; set parallel.pp=1 "
                        "or optim.swa=false")
    if par.ep > 1:
        problems.append(f"{why} with ep={par.ep} each rank holds only its own experts; set parallel.ep=1 or "
                        "optim.swa=false")
    return problems


def make_plan(cfg: RunConfig, world_size: int | None = None) -> ParallelPlan:
    """The plan for ``world_size`` workers (default ``parallel.num_workers``), or a :class:`PlanError`."""
    world_size = world_size or cfg.parallel.num_workers
    problems = plan_problems(cfg, world_size)
    if problems:
        raise PlanError(f"impossible parallel plan for {world_size} workers:\n  - " + "\n  - ".join(problems))
    par = cfg.parallel
    dp = world_size // (par.pp * par.tp * par.sp)
    return ParallelPlan(
        world_size=world_size, dp=dp, pp=par.pp, ep=par.ep, zero_stage=par.zero_stage, tp=par.tp, sp=par.sp,
        micro_batch=cfg.train.micro_batch_size,
        grad_accum=cfg.train.global_batch_size // (cfg.train.micro_batch_size * dp),
        global_batch=cfg.train.global_batch_size, seq_len=cfg.train.seq_len, precision=resolve_precision(cfg),
    )


def check_data_size(plan: ParallelPlan, train_sequences: int, source: str, val_sequences: int | None = None) -> None:
    """Every data-parallel rank needs at least one full step of training sequences and one
    micro-batch of validation sequences."""
    per_eval = plan.micro_batch * plan.dp
    if val_sequences is not None and val_sequences < per_eval:
        raise PlanError(
            f"{source} holds {val_sequences} validation sequences, fewer than one micro-batch per data-parallel "
            f"rank ({per_eval} = micro_batch {plan.micro_batch} * dp {plan.dp}); raise data.val_fraction, use "
            f"more data, or a smaller train.micro_batch_size"
        )
    if train_sequences < plan.global_batch:
        raise PlanError(
            f"{source} holds {train_sequences} training sequences, fewer than one global batch "
            f"({plan.global_batch} = micro_batch {plan.micro_batch} * grad_accum {plan.grad_accum} * dp {plan.dp}); "
            f"use more data, a shorter train.seq_len, or a smaller train.global_batch_size"
        )
