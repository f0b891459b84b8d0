"""The DeepSpeed config dict, built from the run config and its plan (pure; no deepspeed import).

Keys follow DeepSpeed's config reference (``deepspeed/runtime/config.py``): batch sizes
with ``train_batch_size = micro * grad_accum * dp``, ``zero_optimization``, ``bf16`` /
``fp16`` (dynamic loss scaling: ``loss_scale: 0``), gradient clipping and activation
checkpointing. The optimizer and schedule are torch objects passed to
``deepspeed.initialize``, so no fused op needs compiling.
"""

from __future__ import annotations

from typing import Any

from raylm.config import RunConfig
from raylm.parallel.plan import ParallelPlan


def loop_clips_gradients(plan: ParallelPlan) -> bool:
    """Whether the training loop clips the gradients itself, with torch's fused ``clip_grad_norm_`` (whose norm
    is also the one it logs), rather than DeepSpeed: ZeRO-0 in fp32 without pipeline or expert parallelism,
    where every rank holds the whole gradient, already averaged, when it steps. DeepSpeed's clipping walks
    the parameters one by one in Python and computes a norm the loop would compute again for its log: on
    the tiny models of a study's grid that is a few percent of every step (``bench/tiny_points.py``)."""
    return plan.zero_stage == 0 and plan.precision == "fp32" and plan.pp == 1 and plan.ep == 1


def deepspeed_config(cfg: RunConfig, plan: ParallelPlan) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": plan.zero_stage}
    if plan.zero_stage >= 1:
        # DeepSpeed asserts contiguous gradients (and its default reduce-scatter) for ZeRO-2 with experts.
        zero.update(contiguous_gradients=True, overlap_comm=False, reduce_bucket_size=int(5e7))
    if cfg.parallel.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cfg.parallel.use_gpu}
    config: dict[str, Any] = {
        # DeepSpeed counts a micro-batch per rank of its data-parallel group, which holds the sp ranks of each
        # replica too (raylm.parallel.groups): they share sequences, so its batch is sp times the real one
        "train_batch_size": plan.global_batch * plan.sp,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        "gradient_clipping": 0.0 if loop_clips_gradients(plan) else cfg.train.grad_clip,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": plan.precision == "bf16"},
        "fp16": {
            "enabled": plan.precision == "fp16",
            "loss_scale": 0,  # dynamic: halve on overflow and skip the step, grow after a clean window
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.parallel.activation_checkpointing:
        config["activation_checkpointing"] = {"partition_activations": False, "contiguous_memory_optimization": False,
                                              "cpu_checkpointing": False}
    if plan.pp > 1:
        config["pipeline"] = {"activation_checkpoint_interval": 1 if cfg.parallel.activation_checkpointing else 0}
    return config
