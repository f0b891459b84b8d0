"""The one prediction type: a predictor's compute-optimal allocation at one budget, with intervals.

N*(C), D*(C) = C / (6 N*) and the loss L* at budget C (Hoffmann et al. 2022, eq. 4 for Approach 3,
section 3.2 for Approach 2; :mod:`raylm.scaling.predict.predictors` for the others). Every interval is at
``level`` and is (nan, nan) when the predictor has none: ``loss_interval`` should hold the true
compute-optimal loss, ``run_interval`` one verification run's measured loss (it adds one run's
noise), ``n_opt_interval`` and ``d_opt_interval`` the allocation.
"""

from __future__ import annotations

from dataclasses import dataclass

NAN_PAIR = (float("nan"), float("nan"))


@dataclass(frozen=True)
class Prediction:
    """One predictor (``approach``: 'approach3', 'frontier', 'stacked', ...) at one target budget."""

    approach: str
    budget: float
    n_opt: float
    d_opt: float
    loss: float | None
    level: float
    loss_interval: tuple[float, float] = NAN_PAIR
    run_interval: tuple[float, float] = NAN_PAIR
    n_opt_interval: tuple[float, float] = NAN_PAIR
    d_opt_interval: tuple[float, float] = NAN_PAIR

    @property
    def tokens_per_param(self) -> float:
        return self.d_opt / self.n_opt

    def as_dict(self) -> dict:
        return {"approach": self.approach, "budget": self.budget, "n_opt": self.n_opt, "d_opt": self.d_opt,
                "tokens_per_param": self.tokens_per_param, "loss": self.loss, "level": self.level,
                "loss_interval": list(self.loss_interval), "run_interval": list(self.run_interval),
                "n_opt_interval": list(self.n_opt_interval), "d_opt_interval": list(self.d_opt_interval)}
