"""The live view of a batch of Tune trials (a study's points, a sweep's trials): one plain line per
finished trial with its metric, the counts done / running / left, the time elapsed and an estimate of
the time left, and the best so far; a failed trial's error in full.

On a terminal a status line under them is redrawn every second (the running trials and how far each
has got); when stdout is not a terminal (CI, ``ray job logs``) there are only plain lines, with a
heartbeat line when nothing has finished for a while. The estimate of the time left weighs each trial by
its work (a study's points by their FLOPs, a sweep's trials by their steps): time so far x work left /
work done, counting a running trial's finished share of its steps.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import ray.tune

HEARTBEAT_S = 120.0  # a plain line when nothing was printed for this long (stdout not a terminal)
REDRAW_S = 1.0


@dataclass(frozen=True)
class TrialView:
    """How the view names a trial and weighs it: ``label(trial)``, ``group(trial)`` (the best is kept per
    group, e.g. a study's budget; "" for one group), ``work(trial)`` and ``steps(trial)`` (its length)."""

    label: Callable
    steps: Callable
    work: Callable = field(default=lambda trial: 1.0)
    group: Callable = field(default=lambda trial: "")


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class TrialProgress(ray.tune.Callback):
    """Driver-side Tune callback printing the view; ``total`` trials expected (None: as Tune creates them),
    ``metric``/``mode`` the figure shown and ranked."""

    def __init__(self, view: TrialView, metric: str, mode: str, total: int | None = None,
                 out: TextIO | None = None, live: bool | None = None):
        self.view, self.metric, self.mode, self.total = view, metric, mode, total
        self._out = out  # None: sys.stdout when printing (Tune pickles its callbacks; a stream does not pickle)
        self.live = self.out.isatty() if live is None else live
        self.started = time.monotonic()
        self.fraction: dict[str, float] = {}  # running trials: share of their steps done
        self.done_work = 0.0
        self.finished = 0
        self.seen: dict[str, float] = {}  # every trial's work, by id
        self.best: dict[str, tuple[float, str]] = {}
        self.last_print = self.last_redraw = time.monotonic()
        self.status_shown = False

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    # Tune's hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self._remember(trials)
        self.fraction.setdefault(trial.trial_id, 0.0)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        steps = self.view.steps(trial) or 0
        if steps and "step" in result:
            self.fraction[trial.trial_id] = min(1.0, float(result["step"]) / steps)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._remember(trials)
        self.fraction.pop(trial.trial_id, None)
        self.finished += 1
        self.done_work += self.seen.get(trial.trial_id, 1.0)
        value = (trial.last_result or {}).get(self.metric)
        label, group = self.view.label(trial), self.view.group(trial)
        shown = f"{self.metric} {value:.4f}" if isinstance(value, (int, float)) else "no result"
        steps = self.view.steps(trial)
        step = (trial.last_result or {}).get("step")
        if steps and step is not None and step < steps:
            shown += f" (stopped at step {step:,} of {steps:,})"
        if isinstance(value, (int, float)) and self._better(value, group):
            self.best[group] = (float(value), label)
        best = self.best.get(group)
        best_text = f"best{' at ' + group if group else ''}: {best[0]:.4f} ({best[1]})" if best else ""
        self._line(f"[{self._count()}] {label}  {shown}  | {best_text} | {self._where(trials)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.fraction.pop(trial.trial_id, None)
        self._line(f"[{self._count()}] {self.view.label(trial)} failed; trying it again (Ray's error report is "
                   "above)")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._remember(trials)
        self.fraction.pop(trial.trial_id, None)
        self.finished += 1
        self.done_work += self.seen.get(trial.trial_id, 1.0)
        self._line(f"[{self._count()}] {self.view.label(trial)} FAILED: {self._error(trial)}  | {self._where(trials)}")

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if self.live and now - self.last_redraw >= REDRAW_S:
            self.last_redraw = now
            self.out.write("\r\x1b[K" + self._status(trials)[: _width() - 1])
            self.out.flush()
            self.status_shown = True
        elif not self.live and now - self.last_print >= HEARTBEAT_S and self.fraction:
            self._line(f"... {self._status(trials)}")

    def on_experiment_end(self, trials, **info):
        self._clear()

    # the view
    def _line(self, text: str) -> None:
        self._clear()
        print("  " + text, file=self.out, flush=True)
        self.last_print = time.monotonic()

    def _clear(self) -> None:
        if self.status_shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.status_shown = False

    def _remember(self, trials) -> None:
        for trial in trials:
            if trial.trial_id not in self.seen:
                self.seen[trial.trial_id] = float(self.view.work(trial))

    def _better(self, value: float, group: str) -> bool:
        best = self.best.get(group)
        return best is None or (value < best[0] if self.mode == "min" else value > best[0])

    def _count(self) -> str:
        total = self._total()
        return f"{self.finished:>{len(str(total))}}/{total}"

    def _total(self) -> int:
        """Trials expected: ``total``, or more once Tune has created more (a searcher may add trials)."""
        return max(self.total or 0, len(self.seen))

    def _where(self, trials) -> str:
        total = self._total()
        running = len(self.fraction)
        left = max(0, total - self.finished - running)
        elapsed = time.monotonic() - self.started
        text = f"{running} running, {left} left, {clock(elapsed)} elapsed"
        estimate = self._time_left(elapsed)
        return text + (f", ~{clock(estimate)} left" if estimate is not None else "")

    def _time_left(self, elapsed: float) -> float | None:
        """Time so far x work left / work done; None until some work is done or when the total is unknown."""
        if self.total is None:
            return None
        mean = sum(self.seen.values()) / max(len(self.seen), 1)
        total_work = sum(self.seen.values()) + mean * max(0, self._total() - len(self.seen))
        done = self.done_work + sum(self.seen.get(t, mean) * f for t, f in self.fraction.items())
        if done <= 0 or done >= total_work:
            return None if done <= 0 else 0.0
        return elapsed * (total_work - done) / done

    def _status(self, trials) -> str:
        by_id = {t.trial_id: t for t in trials}
        running = ", ".join(f"{self.view.label(by_id[t])} {100 * f:.0f}%" for t, f in self.fraction.items()
                            if t in by_id)
        return f"running: {running or '-'} | {self.finished} done | {self._where(trials)}"

    @staticmethod
    def _error(trial) -> str:
        """The error's last line (Ray's error report, logged at ERROR, has the whole traceback)."""
        try:
            text = trial.get_error()
        except Exception:  # noqa: BLE001 - the fallback below still names where to look
            text = None
        text = (text or getattr(trial, "error_msg", None) or "").strip()
        return text.splitlines()[-1] if text else f"see {getattr(trial, 'local_path', 'the trial directory')}"


def _width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 20)).columns
