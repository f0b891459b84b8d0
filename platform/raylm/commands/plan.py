"""``raylm plan FILE --workers N``: the parallel plan and per-rank memory, without launching anything."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan", help="check a parallel plan and estimate per-rank memory (launches nothing)",
        description="Derive data-parallel size, gradient accumulation and precision for N workers, estimate "
                    "per-rank memory for parameters, gradients and optimizer state (ZeRO paper), or list every "
                    "reason the plan cannot run.",
        epilog="example: raylm plan jobs/configs/gpt_tiny.yaml --workers 4 --parallel.zero_stage 3",
    )
    parser.add_argument("file", nargs="?", help="YAML config file (defaults only when omitted)")
    parser.add_argument("--workers", type=int, default=None, help="world size (default: parallel.num_workers)")
    parser.set_defaults(func=_plan, accepts_overrides=True)


def _gib(n: float) -> str:
    return f"{n / 2**30:.3f} GiB"


def _plan(args: argparse.Namespace) -> int:
    from raylm.config_load import load_config, parse_override_args
    from raylm.model.counting import count_params
    from raylm.parallel.memory import optimizer_moments, zero_memory
    from raylm.parallel.plan import make_plan

    cfg = load_config(args.file, parse_override_args(args.overrides))
    plan = make_plan(cfg, args.workers)
    params = count_params(cfg.model)
    moments = optimizer_moments(cfg.optim.name, cfg.optim.momentum)
    memory = zero_memory(params.total, plan.dp, plan.pp, plan.zero_stage, plan.precision, moments,
                         cfg.parallel.offload_optimizer)
    print(f"workers {plan.world_size} = pp {plan.pp} x dp {plan.dp} (ep {plan.ep}), ZeRO stage {plan.zero_stage}, "
          f"{plan.precision}")
    print(f"batch: micro {plan.micro_batch} x grad_accum {plan.grad_accum} x dp {plan.dp} = global "
          f"{plan.global_batch} sequences = {plan.tokens_per_step:,} tokens per step")
    print(f"model: {params.total:,} parameters ({params.non_embedding:,} non-embedding, {params.active:,} active)")
    print(f"memory per rank (model states, no activations): params {_gib(memory.params_bytes)}, "
          f"grads {_gib(memory.grads_bytes)}, optimizer {_gib(memory.optimizer_bytes)}"
          + (f" (+{_gib(memory.offloaded_bytes)} offloaded to CPU)" if memory.offloaded_bytes else "")
          + f", total {_gib(memory.total_bytes)}")
    return 0
