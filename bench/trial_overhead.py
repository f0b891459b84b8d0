"""Per-trial overhead of a study or sweep on this machine, as JSON.

    python bench/trial_overhead.py [--trials 4] [--steps 5]

Runs ``--trials`` tiny training runs (a 2-layer GPT, ``--steps`` optimizer steps each) as Tune
trials through the one trial runner, one at a time on an already running local Ray, and reads
the timeline each run left in MLflow: run created -> first logged step (start-up: trial
process, Train controller, worker, process group, DeepSpeed engine, data loader), first ->
last step (training), last step -> run ended (checkpoint, model export, tear-down). The first
trial also pays Ray's worker-process start-up and is reported apart. The goal is 5 s or less
of start-up plus tear-down per trial. Writes the ``trial_overhead`` section of ``bench/results.json``.
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

GOAL_OVERHEAD_S = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    started_at = time.perf_counter()
    from mlflow.tracking import MlflowClient

    from raylm.ray_session import connect_ray
    from raylm.tune.sweep import run_sweep
    from raylm.tune.sweep_config import load_sweep

    workdir = Path(tempfile.mkdtemp(prefix="raylm-bench-overhead-"))
    seeds = list(range(args.trials))
    path = write_sweep(workdir, {"train.seed": {"grid": seeds}},
                       base={"train": {"max_steps": args.steps, "log_every": 1, "eval_every": args.steps,
                                       "checkpoint_every": args.steps},
                             "parallel": {"num_workers": 1, "cpus_per_worker": 1}},
                       trials={"max_concurrent_trials": 1})
    connect_ray()
    started = time.time()
    outcome = run_sweep(load_sweep(path), log=lambda *_: None)
    wall = time.time() - started
    client = MlflowClient(outcome.tracking_uri)
    rows = []
    for row in outcome.rows:
        run = client.get_run(row.run_id)
        history = sorted(client.get_metric_history(row.run_id, "train/loss"), key=lambda m: m.step)
        rows.append({"start_to_first_step_s": (history[0].timestamp - run.info.start_time) / 1000,
                     "first_to_last_step_s": (history[-1].timestamp - history[0].timestamp) / 1000,
                     "last_step_to_end_s": (run.info.end_time - history[-1].timestamp) / 1000,
                     "start": run.info.start_time})
    rows.sort(key=lambda r: r["start"])
    steady = rows[1:] or rows

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in steady), 2)

    overhead = median("start_to_first_step_s") + median("last_step_to_end_s")
    details = {
        "trials": args.trials, "steps_per_trial": args.steps,
        "first_trial": {k: round(v, 2) for k, v in rows[0].items() if k != "start"},
        "median_start_to_first_step_s": median("start_to_first_step_s"),
        "median_first_to_last_step_s": median("first_to_last_step_s"),
        "median_last_step_to_end_s": median("last_step_to_end_s"),
        "median_overhead_s": round(overhead, 2), "goal_overhead_s": GOAL_OVERHEAD_S,
        "goal_met": overhead <= GOAL_OVERHEAD_S,
        "sweep_wall_s": round(wall, 1), "wall_per_trial_s": round(wall / args.trials, 1),
    }
    figures = [Figure("per-trial overhead: start-up + tear-down (median, trials after the first)", overhead, None,
                      "s", goal=GOAL_OVERHEAD_S, goal_on="raylm", higher_is_better=False,
                      notes=f"start-up {details['median_start_to_first_step_s']} s, tear-down "
                            f"{details['median_last_step_to_end_s']} s")]
    emit("trial_overhead", figures, details, started_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
