"""ASHA (Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning", Algorithm 2) that
lets a trial finish once it has trained its full length.

Ray's ASHA stops every trial whose time reaches ``max_t``, and may stop one at a rung equal to its
last step: the trial would be killed at its final report, after all its training, but before it
exports its model and ends its MLflow run. A trial's last report (time >= ``max_t``) is therefore
always allowed to continue; every earlier rung decides as in ASHA.
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


class FinishingASHA(ASHAScheduler):
    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(self._time_attr, 0) >= self._max_t:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)
