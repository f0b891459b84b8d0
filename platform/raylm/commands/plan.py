"""``raylm plan FILE --workers N``: the parallel plan and per-rank memory, without launching anything."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan", help="check a parallel plan and estimate per-rank memory (launches nothing)",
        description="Derive data-parallel size, gradient accumulation and precision for N workers, estimate "
                    "per-rank memory for parameters, gradients and optimizer state (ZeRO paper) and activations "
                    "(Korthikanti et al. 2022), with tensor and sequence parallelism, or list every reason the "
                    "plan cannot run.",
        epilog="example: raylm plan jobs/configs/gpt_tiny.yaml --workers 4 --parallel.tp 2 --parallel.zero_stage 1",
    )
    parser.add_argument("file", nargs="?", help="YAML config file (defaults only when omitted)")
    parser.add_argument("--workers", type=int, default=None, help="world size (default: parallel.num_workers)")
    parser.set_defaults(func=_plan, accepts_overrides=True)


def _gib(n: float) -> str:
    return f"{n / 2**30:.3f} GiB"


def _plan(args: argparse.Namespace) -> int:
    from raylm.config_load import load_config, parse_override_args
    from raylm.model.counting import count_params
    from raylm.parallel.groups import layout_groups
    from raylm.parallel.plan import make_plan
    from raylm.parallel.rank_memory import rank_memory

    cfg = load_config(args.file, parse_override_args(args.overrides))
    plan = make_plan(cfg, args.workers)
    params = count_params(cfg.model)
    memory = rank_memory(cfg, plan)
    states = memory.states
    axes = " x ".join(f"{name} {size}" for name, size in (("tp", plan.tp), ("sp", plan.sp), ("pp", plan.pp))
                      if size > 1 or name == "pp")
    print(f"workers {plan.world_size} = {axes} x dp {plan.dp} (ep {plan.ep}), ZeRO stage {plan.zero_stage}, "
          f"{plan.precision}")
    print(f"batch: micro {plan.micro_batch} x grad_accum {plan.grad_accum} x dp {plan.dp} = global "
          f"{plan.global_batch} sequences = {plan.tokens_per_step:,} tokens per step"
          + (f"; each rank of a sequence group holds {plan.seq_len // plan.sp} of the {plan.seq_len} tokens"
             if plan.sp > 1 else ""))
    if plan.model_parallel:
        groups = layout_groups(plan.world_size, plan.tp, plan.sp)
        print("ranks (tensor-major): " + "; ".join(
            f"{kind} groups {groups[kind]}" for kind, size in (("tensor", plan.tp), ("sequence", plan.sp),
                                                              ("data", plan.dp)) if size > 1))
    print(f"model: {params.total:,} parameters ({params.non_embedding:,} non-embedding, {params.active:,} active)"
          + (f"; {memory.params_per_rank:,.0f} per rank with tp {plan.tp}" if plan.tp > 1 else ""))
    print(f"memory per rank: params {_gib(states.params_bytes)}, grads {_gib(states.grads_bytes)}, "
          f"optimizer {_gib(states.optimizer_bytes)}"
          + (f" (+{_gib(states.offloaded_bytes)} offloaded to CPU)" if states.offloaded_bytes else "")
          + f", activations {_gib(memory.activations_bytes)} (one micro-batch), total {_gib(memory.total_bytes)}")
    return 0
