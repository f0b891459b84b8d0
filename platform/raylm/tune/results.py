"""A finished sweep's results: the ranked table (CSV and text), its plots, the best configuration.

Pure data in, files out; nothing here talks to Ray or MLflow.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrialRow:
    trial_id: str
    values: dict[str, Any]           # the trial's sampled values, by dotted key
    final: float | None              # the metric at the trial's last report
    best: float | None               # the best value of the metric over its reports
    steps: int                       # optimizer steps run
    status: str                      # FINISHED, KILLED (stopped early), FAILED or RUNNING
    run_id: str | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, metric) at each report


def ranked(rows: list[TrialRow], mode: str = "min") -> list[TrialRow]:
    """Best first by the best value reached; trials without a value last."""
    sign = 1 if mode == "min" else -1

    def key(row: TrialRow):
        return (row.best is None or not math.isfinite(row.best), sign * (row.best if row.best is not None else 0))

    return sorted(rows, key=key)


def value_keys(rows: list[TrialRow]) -> list[str]:
    return sorted({k for row in rows for k in row.values})


def write_csv(rows: list[TrialRow], path: Path, metric: str) -> None:
    keys = value_keys(rows)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "trial_id", *keys, f"final_{metric}", f"best_{metric}", "steps", "status", "run_id"])
        for rank, row in enumerate(rows, 1):
            writer.writerow([rank, row.trial_id, *[row.values.get(k, "") for k in keys], _num(row.final),
                             _num(row.best), row.steps, row.status, row.run_id or ""])


def format_table(rows: list[TrialRow], metric: str) -> str:
    keys = value_keys(rows)
    header = ["#", *keys, f"best {metric}", f"final {metric}", "steps", "status"]
    lines = [[str(i), *[_short(row.values.get(k, "")) for k in keys], _num(row.best, 4), _num(row.final, 4),
              str(row.steps), row.status + (" (stopped early)" if row.status == "KILLED" else "")]
             for i, row in enumerate(rows, 1)]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def _num(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_metric_vs_lr(rows: list[TrialRow], path: Path, metric: str, series_key: str = "optim.name") -> bool:
    """Best metric against the learning rate, one series per optimizer (or one series). False if no lr varied."""
    points = [r for r in rows if "train.lr" in r.values and r.best is not None and math.isfinite(r.best)]
    if not points:
        return False
    from raylm.scaling.plots import new_figure

    fig, ax = new_figure(7, 4.5)
    for name, group in _groups(points, series_key).items():
        group = sorted(group, key=lambda r: r.values["train.lr"])
        ax.plot([r.values["train.lr"] for r in group], [r.best for r in group], "o-", label=name)
        killed = [r for r in group if r.status == "KILLED"]
        ax.scatter([r.values["train.lr"] for r in killed], [r.best for r in killed], marker="x", color="black",
                   zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate (train.lr)")
    ax.set_ylabel(f"best {metric}")
    ax.set_title(f"{metric} against learning rate (x: stopped early)")
    _finish(ax, fig, path)
    return True


def plot_best_curves(rows: list[TrialRow], path: Path, metric: str, mode: str = "min",
                     series_key: str = "optim.name") -> bool:
    """The curve of each series' best trial, overlaid."""
    with_curves = [r for r in rows if r.curve and r.best is not None]
    if not with_curves:
        return False
    from raylm.scaling.plots import new_figure

    fig, ax = new_figure(7, 4.5)
    for name, group in _groups(with_curves, series_key).items():
        best = ranked(group, mode)[0]
        steps, values = zip(*best.curve, strict=True)
        label = f"{name}" + (f" (lr {best.values['train.lr']:.3g})" if "train.lr" in best.values else "")
        ax.plot(steps, values, "o-", markersize=3, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric)
    ax.set_title(f"best trial of each {series_key if _has(rows, series_key) else 'sweep'}")
    _finish(ax, fig, path)
    return True


def _finish(ax, fig, path: Path) -> None:
    from raylm.scaling.plots import save_figure

    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def _has(rows: list[TrialRow], key: str) -> bool:
    return any(key in r.values for r in rows)


def _groups(rows: list[TrialRow], key: str) -> dict[str, list[TrialRow]]:
    groups: dict[str, list[TrialRow]] = {}
    for row in rows:
        groups.setdefault(str(row.values.get(key, "all trials")), []).append(row)
    return groups
