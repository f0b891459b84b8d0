"""What every benchmark shares: timing helpers, the figures of the report and ``bench/results.json``.

A benchmark measures raylm and an anchor (what a user would run instead) in the same process or
the same run, alternating, and reports their ratio: absolute figures on a shared machine move
with the load, ratios much less. Each script writes its own section of ``bench/results.json``
(:func:`write_section`) and still prints its JSON; ``bench/report.py`` prints the table.

Files in ``bench/`` whose names start with ``_`` are helpers, not benchmarks (``make bench``
skips them). Scripts import this one as ``_common``: ``python bench/x.py`` puts ``bench/`` first
on ``sys.path``.
"""

from __future__ import annotations

import json
import math
import os
import platform as _platform  # the stdlib module (raylm's sources live in platform/, which has no __init__)
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("RAYLM_BENCH_RESULTS", BENCH_DIR / "results.json"))


# ----------------------------------------------------------------------------------------- timing


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def steady(values: list[float], skip: int) -> list[float]:
    """The steady-state part of per-step figures: all but the first ``skip`` (start-up, warm-up), or
    the last half when there are too few steps for that."""
    return values[skip:] if len(values) > skip + 1 else values[len(values) // 2:]


def alternate(rounds: int, contenders: dict[str, Callable[[], object]]) -> dict[str, list]:
    """Run every contender once per round, in an order that rotates each round (no contender always
    runs first or last), and return each one's results in round order. A load change during the
    benchmark then hits all of them alike."""
    names = list(contenders)
    out: dict[str, list] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            out[name].append(contenders[name]())
    return out


class Stopwatch:
    """``with Stopwatch() as t: ...``; then ``t.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- figures


@dataclass
class Figure:
    """One row of the report.

    ``raylm`` and ``anchor`` are the two measured values (``unit``); ``ratio`` is raylm / anchor
    unless given (a benchmark that pairs each raylm measurement with the anchor measured next to it
    passes the median of those paired ratios).
    The goal applies to ``goal_on`` (``"ratio"`` or ``"raylm"``): at least ``goal`` when
    ``higher_is_better``, at most ``goal`` otherwise; with ``tolerance`` instead, the ratio must lie
    within ``1 +- tolerance`` (an estimate against a measurement). ``met`` is None when there is no goal or a
    value is missing; ``miss`` says by how much a missed goal is missed."""

    figure: str
    raylm: Optional[float]
    anchor: Optional[float] = None
    unit: str = ""
    anchor_name: str = ""
    goal: Optional[float] = None
    goal_on: str = "ratio"
    higher_is_better: bool = True
    notes: str = ""
    ratio: Optional[float] = None
    tolerance: Optional[float] = None
    met: Optional[bool] = field(default=None, init=False)
    goal_text: str = field(default="", init=False)
    miss: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if self.ratio is None and _finite(self.raylm) and _finite(self.anchor) and self.anchor:
            self.ratio = self.raylm / self.anchor
        if self.tolerance is not None:
            self.goal_text = f"ratio within 1 +- {self.tolerance:g}"
            if _finite(self.ratio):
                off = abs(self.ratio - 1)
                self.met = off <= self.tolerance
                if not self.met:
                    self.miss = f"off by {off:.0%} (allowed {self.tolerance:.0%})"
            return
        if self.goal is None:
            return
        sign = ">=" if self.higher_is_better else "<="
        suffix = "x" if self.goal_on == "ratio" else (f" {self.unit}" if self.unit else "")
        self.goal_text = f"{self.goal_on} {sign} {_fmt(self.goal)}{suffix}"
        value = self.ratio if self.goal_on == "ratio" else self.raylm
        if not _finite(value):
            return
        self.met = value >= self.goal if self.higher_is_better else value <= self.goal
        if not self.met:
            short = (self.goal - value) / self.goal if self.higher_is_better else (value - self.goal) / self.goal
            self.miss = f"missed by {abs(short):.0%} ({_fmt(value)} against {_fmt(self.goal)})"

    def as_dict(self) -> dict:
        out = asdict(self)
        out["goal"] = out.pop("goal_text") or None
        out["goal_value"] = self.goal if self.tolerance is None else self.tolerance
        return out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _fmt(x: float) -> str:
    if x == 0 or 0.01 <= abs(x) < 1e5:
        return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"
    return f"{x:.3g}"


# ----------------------------------------------------------------------------------------- results.json


def machine() -> dict:
    """Where the figures were taken."""
    cpu = _platform.processor() or _platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        torch_version = None
    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "memory_gib": memory_gib, "gpu": gpu,
            "python": _platform.python_version(), "torch": torch_version, "os": _platform.platform()}


def read_results(path: Path = RESULTS) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {"benchmarks": {}}


def write_section(benchmark: str, figures: list[Figure], details: dict, seconds: float | None = None,
                  path: Path = RESULTS) -> dict:
    """Put ``benchmark``'s figures and details into ``results.json`` (the other sections are kept)
    and return the section."""
    results = read_results(path)
    results.setdefault("benchmarks", {})
    results["machine"] = machine()
    section = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seconds": None if seconds is None else round(seconds, 1),
               "figures": [f.as_dict() for f in figures], "details": details}
    results["benchmarks"][benchmark] = section
    results["updated"] = section["date"]
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".results-", suffix=".json", delete=False) as tmp:
        tmp.write(json.dumps(_json_safe(results), indent=2) + "\n")
    os.replace(tmp.name, path)
    return section


def _json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def emit(benchmark: str, figures: list[Figure], details: dict, started: float) -> None:
    """Write the section and print the benchmark's JSON (figures and details) on stdout."""
    section = write_section(benchmark, figures, details, time.perf_counter() - started)
    print(json.dumps(_json_safe({"benchmark": benchmark, **section}), indent=2))
