"""What one trial costs besides training, as measured by ``bench/trial_overhead.py``.

``raylm study plan`` estimates a study's wall time from these figures: the checkout's own
``bench/results.json`` when the benchmark has run there, else the figures it measured on the
reference machine (2 CPU cores, no GPU; docs/studies.md). An in-process trial (one worker, Ray
Train local mode in a reused trial process; more workers on the pool of worker processes that
process keeps, :mod:`raylm.train.pool`) pays process start-up once per trial process, and little
per trial after that; a worker-group trial starts its controller and worker processes every time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results.json"
# bench/trial_overhead.py on the reference machine, 2026-12-06: median warm start-up + tear-down + the gap
# to the next trial, and the first trial of a process
REFERENCE = {
    "in_process": (0.41, 5.2),
    "worker_group": (20.7, 19.9),
    "two_workers_pool": (0.42, 10.1),
    "two_workers": (26.7, 23.8),
}


@dataclass(frozen=True)
class TrialOverhead:
    warm_s: float    # per trial once a trial process is running (in process) or per trial (worker group)
    first_s: float   # the first trial of each concurrent trial process
    source: str      # where the figures come from


def layout_name(in_process: bool, workers: int) -> str:
    if in_process:
        return "in_process" if workers == 1 else "two_workers_pool"
    return "worker_group" if workers == 1 else "two_workers"


def trial_overhead(in_process: bool, workers: int, results: Path = RESULTS) -> TrialOverhead:
    """The measured overhead of a trial hosted this way (more than two workers: the two-worker figure)."""
    name = layout_name(in_process, workers)
    measured = _measured(results).get(name)
    if measured is not None:
        return measured
    warm, first = REFERENCE[name]
    return TrialOverhead(warm, first, "reference machine (2 CPUs)")


def _measured(results: Path) -> dict[str, TrialOverhead]:
    try:
        section = json.loads(results.read_text())["benchmarks"]["trial_overhead"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    found = {}
    for name, layout in section.get("details", {}).get("layouts", {}).items():
        median, first = layout.get("median", {}), layout.get("first_trial", {})
        try:
            warm = median["start_to_first_step_s"] + median["last_step_to_end_s"] + median.get("between_trials_s", 0.0)
            cold = first["start_to_first_step_s"] + first["last_step_to_end_s"]
        except (KeyError, TypeError):
            continue
        found[name] = TrialOverhead(round(warm, 2), round(cold, 2), f"bench/results.json, {section.get('date', '?')}")
    return found
