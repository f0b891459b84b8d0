"""Driver-side Tune callback: each trial's MLflow run ends the way the trial ended, and the
parent run tracks the best metric so far.

A trial stopped by the scheduler (ASHA) is killed with its workers, so nothing inside it can
end its run: the driver marks it KILLED, with the step it reached. A trial that raised is
marked FAILED with the error (unless the trial already did so itself).
"""

from __future__ import annotations

import ray.tune

from raylm.tracking.writer import RemoteRun, current_writer
from raylm.tune.trial import TRIAL_TAG, trial_key


class TrialRunStatus(ray.tune.Callback):
    def __init__(self, writer: str, uri: str, experiment: str, parent_handle: dict, metric: str, mode: str):
        self.writer, self.uri, self.experiment = writer, uri, experiment
        self.parent_handle, self.metric, self.mode = parent_handle, metric, mode
        self.best: float | None = None
        self.reported = 0
        self.last_step: dict[str, int] = {}

    def _writer(self) -> str:
        return current_writer(self.writer)  # after a restore the writer is a new actor

    def _parent(self) -> RemoteRun:
        return RemoteRun.from_handle({**self.parent_handle, "writer": self._writer()})

    def _trial_run(self, trial) -> RemoteRun | None:
        return RemoteRun.find(self._writer(), self.uri, self.experiment, TRIAL_TAG,
                              trial_key(self.parent_handle["run_id"], trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "step" in result:
            self.last_step[trial.trial_id] = int(result["step"])
        value = result.get(self.metric)
        if value is None:
            return
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = float(value)
        self.reported += 1
        self._parent().log_metrics({best_metric_name(self.metric): self.best}, step=self.reported)

    def on_trial_complete(self, iteration, trials, trial, **info):
        """Tune ended the trial without an error: it finished, or the scheduler stopped it. A stopped trial's
        run may still be RUNNING, or FAILED by the trial seeing its own workers die: either way it is KILLED."""
        run = self._trial_run(trial)
        if run is not None and run.status() != "FINISHED":
            step = self.last_step.get(trial.trial_id, trial.last_result.get("step", 0))
            run.set_tags({"raylm.stopped_by": "scheduler", "raylm.stopped_at_step": step})
            run.finish("KILLED", force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        run = self._trial_run(trial)
        if run is not None:
            error = getattr(trial, "error_msg", None) or "see the trial's error file under the sweep directory"
            run.finish("FAILED", error=str(error))


def best_metric_name(metric: str) -> str:
    return "best/" + metric.replace("/", "_")
