"""Peak memory per rank under ZeRO stages 0-3, tensor and sequence parallelism on 2 Ray workers,
against what ``raylm plan`` estimates.

    python bench/zero_memory.py [--layouts zero0,zero1,zero2,zero3,tp2,sp2] [--steps 3]

For each layout (``tp2``: tensor parallel over both workers, ZeRO-0; ``sp2``: sequence parallel,
ZeRO-0) a ``TorchTrainer`` with 2 workers (1 CPU each, gloo) builds raylm's DeepSpeed
engine (:func:`raylm.parallel.engine.make_training_engine`, fp32, AdamW, clipping) for a GPT
large enough that model states dominate everything else a rank allocates (d_model 512,
8 layers, vocab 8192: 29M parameters, 470 MB of fp32 Adam states unpartitioned) and trains
``--steps`` steps on 1 x 32-token micro-batches (activations are a few MB). Each rank measures:

* ``peak``: the growth of its peak resident set (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs`` just before the model is built) over its resident set at that
  moment: everything the model, the engine and training added at their peak (parameters,
  gradients, optimizer state, DeepSpeed's flat buffers and partitions, the optimizer's
  temporaries, activations), after imports, the process group and a throwaway tiny engine
  (DeepSpeed's code loaded on first use). glibc is told (``mallopt``) to map every allocation
  of 64 KiB or more on its own and give it back when freed, so the resident set follows the
  live allocations, as a GPU's peak allocated memory does, rather than what the allocator keeps;
* ``live``: the bytes of the distinct tensor storages alive after the last step (every
  parameter, gradient and tensor Python can reach), the steady state without temporaries.

``raylm plan``'s estimate (:func:`raylm.parallel.rank_memory.rank_memory`: model states on the
rank's share of the parameters, plus activations) is compared with the larger rank's ``peak``; the
goal is within 25%. The ZeRO paper's model states alone (parameters, gradients, optimizer state,
Figure 1; ``zero_model_states``) are in the details beside it: they miss DeepSpeed's buffers
(``raylm.parallel.memory``), which is why the plan adds them. ``live`` counts buffers allocated but
never written too (DeepSpeed's reduce bucket is 200 MB of ``torch.empty``), which the resident set
does not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import Figure, emit, log

TOLERANCE = 0.25
MODEL = {"arch": "gpt", "vocab_size": 8192, "max_seq_len": 64, "d_model": 512, "n_layers": 8, "n_heads": 8}


LAYOUTS = {"zero0": {"zero_stage": 0}, "zero1": {"zero_stage": 1}, "zero2": {"zero_stage": 2},
           "zero3": {"zero_stage": 3}, "tp2": {"zero_stage": 0, "tp": 2}, "sp2": {"zero_stage": 0, "sp": 2}}


def run_dict(layout: str, steps: int) -> dict:
    return {
        "model": MODEL,
        "parallel": {"num_workers": 2, **LAYOUTS[layout]},
        "optim": {"name": "adamw"},
        "train": {"max_steps": steps, "micro_batch_size": 1, "global_batch_size": 2, "seq_len": 32, "lr": 1e-3,
                  "warmup_steps": 1, "grad_clip": 1.0},
    }


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def live_tensor_bytes(engine) -> int:
    """Bytes of the distinct storages of every tensor Python can reach, plus parameters' gradients."""
    import gc

    import torch

    seen: dict[int, int] = {}

    def add(t) -> None:
        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())

    for p in engine.module.parameters():
        add(p)
        add(p.grad)
        add(getattr(p, "ds_tensor", None))
    for obj in gc.get_objects():
        add(obj)
    return sum(seen.values())


def exact_heap() -> None:
    """Make this process's resident set follow its live allocations: glibc serves every allocation of
    64 KiB or more with its own mmap (returned to the system when freed) and trims the heap top, so
    memory freed is not kept and counted (every tensor of these models is larger than that)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 * 1024)
    libc.mallopt(m_trim_threshold, 128 * 1024)


def train(engine, batches) -> float:
    for tokens in batches:
        out = engine(ids=tokens[:, :-1], targets=tokens[:, 1:])
        engine.backward(out.loss)
        engine.step()
    return out.loss.item()


def memory_loop(config: dict) -> None:
    """A Ray Train worker: build the engine, train, measure; rank files go to ``config['out']``.

    A throwaway engine of a tiny model with the same settings is built and stepped first, so the
    code DeepSpeed imports and loads on first use is not counted as the model's memory."""
    import gc

    import ray.train
    import torch

    from raylm.config import RunConfig
    from raylm.parallel.engine import init_distributed, make_training_engine
    from raylm.parallel.plan import make_plan
    from raylm.train.optimizers import optimizer_factories

    exact_heap()
    context = ray.train.get_context()
    rank = context.get_world_rank()
    cfg = RunConfig.from_dict(config["run"])
    init_distributed(False)
    plan = make_plan(cfg, context.get_world_size())
    gen = torch.Generator().manual_seed(rank)
    batches = [torch.randint(0, cfg.model.vocab_size, (1, cfg.train.seq_len + 1), generator=gen)
               for _ in range(cfg.train.max_steps)]
    tiny = RunConfig.from_dict({**config["run"], "model": {**config["run"]["model"], "d_model": 16, "n_heads": 2,
                                                           "n_layers": 1}})
    tiny_engine = make_training_engine(tiny, make_plan(tiny, context.get_world_size()), *optimizer_factories(tiny))
    train(tiny_engine, batches[:2])
    torch.manual_seed(cfg.train.seed)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from here
    base_kib = _status_kib("VmRSS")
    engine = make_training_engine(cfg, plan, *optimizer_factories(cfg))
    built_kib = _status_kib("VmHWM")
    loss = train(engine, batches)
    result = {"rank": rank, "base_bytes": base_kib * 1024, "peak_bytes": (_status_kib("VmHWM") - base_kib) * 1024,
              "after_build_bytes": (built_kib - base_kib) * 1024,
              "end_bytes": (_status_kib("VmRSS") - base_kib) * 1024, "live_bytes": live_tensor_bytes(engine),
              "loss": loss}
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(result))


def measure(layout: str, steps: int, workdir: Path) -> list[dict]:
    import ray.train
    from ray.train.torch import TorchTrainer

    out = workdir / layout
    out.mkdir(parents=True)
    trainer = TorchTrainer(
        memory_loop, train_loop_config={"run": run_dict(layout, steps), "out": str(out)},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name=layout, storage_path=str(workdir / "ray")),
    )
    trainer.fit()
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()

    from raylm.config import RunConfig
    from raylm.parallel.plan import make_plan
    from raylm.parallel.rank_memory import rank_memory
    from raylm.ray_session import connect_ray

    connect_ray()
    workdir = Path(tempfile.mkdtemp(prefix="raylm-bench-memory-"))
    figures, details = [], {"model": MODEL, "micro_batch": 1, "seq_len": 32, "steps": args.steps, "layouts": {}}
    mib = 2**20
    for layout in args.layouts.split(","):
        log(f"layout {layout}")
        cfg = RunConfig.from_dict(run_dict(layout, args.steps))
        plan = make_plan(cfg, 2)
        estimate = rank_memory(cfg, plan)
        params = estimate.params_per_rank
        ranks = measure(layout, args.steps, workdir)
        peak = max(r["peak_bytes"] for r in ranks)
        figures.append(Figure(f"peak memory per rank, {layout}, 2 workers: raylm plan vs measured",
                              estimate.total_bytes / mib, peak / mib, "MiB", "measured peak RSS growth",
                              tolerance=TOLERANCE))
        live = max(r["live_bytes"] for r in ranks)
        states = estimate.states
        details["layouts"][layout] = {
            "parallel": LAYOUTS[layout], "parameters_per_rank": params, "measured_peak_bytes": peak,
            "measured_peak_bytes_per_param": peak / params,
            "estimate": {**vars(states), "peak_bytes": states.peak_bytes,
                         "model_states_bytes": states.model_states_bytes,
                         "activations_bytes": estimate.activations_bytes, "total_bytes": estimate.total_bytes},
            "estimate_bytes_per_param": estimate.total_bytes / params,
            "estimate_over_measured_peak": estimate.total_bytes / peak,
            "paper_model_states_over_measured_peak": states.model_states_bytes / peak,
            "live_tensor_bytes_after_step": live, "ranks": ranks,
        }
    emit("zero_memory", figures, details, started)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
