"""Per-trial overhead of a study or sweep on this machine, where it goes, as JSON.

    python bench/trial_overhead.py [--trials 4] [--steps 5] [--layouts in_process,worker_group,two_workers]

For each layout, runs ``--trials`` tiny training runs (a 2-layer GPT, ``--steps`` optimizer steps
each) as Tune trials of one sweep, one at a time, on an already running local Ray:

- ``in_process``: one worker, trained in the (reused) Tune trial process (Ray Train local mode);
- ``worker_group``: one worker on a Ray Train worker group (``trials.in_process: false``);
- ``two_workers``: two workers (data parallel, gloo) on a worker group.

It reads the timeline each run left in MLflow: run created -> first logged step (start-up), first ->
last step (training), last step -> run ended (tear-down), and the phases the run logged itself
(``startup/*``: launch, process group, engine, data, peak FLOPs, restore, first step;
``teardown/*``: final checkpoint, model export); the rest of tear-down is shutdown (the trainer
and its processes ending, the run's end reaching the store). ``between_trials_s`` is the gap from
one run's end to the next run's creation (Tune ending the trial, starting or resetting the next).
The first trial of each layout also pays for starting processes and is reported apart; the goal
(issue: fast trials) is a median warm overhead of at most 2 s in process and 8 s with two workers.
Writes the ``trial_overhead`` section of ``bench/results.json``; ``raylm study plan`` reads it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import Figure, emit  # noqa: E402 - bench/ is on sys.path (the script's folder)
from _tiny_sweep import write_sweep  # noqa: E402

GOALS_S = {"in_process": 2.0, "worker_group": None, "two_workers_pool": 8.0, "two_workers": None}
LAYOUTS = {
    "in_process": ({"num_workers": 1, "cpus_per_worker": 1}, {"in_process": True}),
    "worker_group": ({"num_workers": 1, "cpus_per_worker": 1}, {"in_process": False}),
    "two_workers_pool": ({"num_workers": 2, "cpus_per_worker": 1}, {"in_process": True}),
    "two_workers": ({"num_workers": 2, "cpus_per_worker": 1}, {"in_process": False}),
}
STARTUP = ("launch", "process_group", "engine", "data", "peak_flops", "restore", "first_step")
TEARDOWN = ("checkpoint", "export")


def run_layout(name: str, trials: int, steps: int) -> dict:
    """Run one sweep of ``trials`` tiny trials in layout ``name``; its per-trial timelines."""
    from mlflow.tracking import MlflowClient

    from raylm.tune.sweep import run_sweep
    from raylm.tune.sweep_config import load_sweep

    parallel, trial_settings = LAYOUTS[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"raylm-bench-overhead-{name}-"))
    path = write_sweep(workdir, {"train.seed": {"grid": list(range(trials))}},
                       base={"train": {"max_steps": steps, "log_every": 1, "eval_every": steps,
                                       "checkpoint_every": steps, "global_batch_size": 4 * parallel["num_workers"]},
                             "parallel": parallel},
                       trials={"max_concurrent_trials": 1, **trial_settings})
    started = time.time()
    outcome = run_sweep(load_sweep(path), log=lambda *_: None)
    wall = time.time() - started
    client = MlflowClient(outcome.tracking_uri)
    rows = [_timeline(client, row.run_id) for row in outcome.rows]
    rows.sort(key=lambda r: r["created"])
    for previous, row in zip(rows, rows[1:], strict=False):
        row["between_trials_s"] = (row["created"] - previous["ended"]) / 1000
    return {"rows": rows, "wall_s": wall}


def _timeline(client, run_id: str) -> dict:
    run = client.get_run(run_id)
    metrics = run.data.metrics
    history = sorted(client.get_metric_history(run_id, "train/loss"), key=lambda m: m.step)
    startup = (history[0].timestamp - run.info.start_time) / 1000
    teardown = (run.info.end_time - history[-1].timestamp) / 1000
    phases = {f"startup_{k}_s": metrics.get(f"startup/{k}_s", 0.0) for k in STARTUP}
    phases["startup_trial_setup_s"] = max(0.0, startup - sum(phases.values()))  # the run's params, the trainer
    ends = {f"teardown_{k}_s": metrics.get(f"teardown/{k}_s", 0.0) for k in TEARDOWN}
    ends["teardown_shutdown_s"] = max(0.0, teardown - sum(ends.values()))
    return {"created": run.info.start_time, "ended": run.info.end_time, "start_to_first_step_s": startup,
            "first_to_last_step_s": (history[-1].timestamp - history[0].timestamp) / 1000,
            "last_step_to_end_s": teardown, **phases, **ends}


def summarize(name: str, result: dict) -> dict:
    rows = result["rows"]
    warm = rows[1:] or rows

    def med(key: str) -> float:
        values = [r[key] for r in warm if key in r]
        return round(statistics.median(values), 3) if values else None

    keys = [k for k in rows[-1] if k.endswith("_s")]
    overhead = med("start_to_first_step_s") + med("last_step_to_end_s")
    return {"layout": name, "trials": len(rows), "median_overhead_s": round(overhead, 2),
            "goal_overhead_s": GOALS_S[name],
            "goal_met": None if GOALS_S[name] is None else overhead <= GOALS_S[name],
            "median": {k: med(k) for k in keys},
            "first_trial": {k: round(v, 3) for k, v in rows[0].items() if k.endswith("_s")},
            "sweep_wall_s": round(result["wall_s"], 1), "wall_per_trial_s": round(result["wall_s"] / len(rows), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    args = parser.parse_args()
    started_at = time.perf_counter()
    from raylm.ray_session import connect_ray

    connect_ray()
    layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    summaries = {name: summarize(name, run_layout(name, args.trials, args.steps)) for name in layouts}
    figures = []
    for name, summary in summaries.items():
        median = summary["median"]
        figures.append(Figure(
            f"per-trial overhead, {name.replace('_', ' ')}: start-up + tear-down (median, warm)",
            summary["median_overhead_s"], None, "s", goal=GOALS_S[name], goal_on="raylm", higher_is_better=False,
            notes=f"start-up {median['start_to_first_step_s']} s (engine {median['startup_engine_s']} s, launch "
                  f"{median['startup_launch_s']} s), tear-down {median['last_step_to_end_s']} s, between trials "
                  f"{median.get('between_trials_s')} s"))
    details = {"trials": args.trials, "steps_per_trial": args.steps, "layouts": summaries}
    emit("trial_overhead", figures, details, started_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
