"""Validated scaling-study measurements: one (N, D, loss[, C]) row per finished training run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raylm.errors import UserError
from raylm.scaling.fit.objective import N_PARAMS, LogData
from raylm.scaling.laws import training_flops

MIN_POINTS = N_PARAMS  # the Approach 3 law has five parameters


@dataclass(frozen=True)
class ScalingData:
    """Parameters N, tokens D, final loss L and training compute C of each run (arrays of equal length).

    ``flops`` is the compute the run was charged, 6ND when not measured (Hoffmann et al. 2022, section 3).
    """

    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    flops: np.ndarray

    @classmethod
    def from_arrays(cls, params, tokens, loss, flops=None, *, source: str = "data") -> ScalingData:
        """Check every value (finite, positive, enough rows) and build the data; raises :class:`UserError`."""
        columns = {"params": params, "tokens": tokens, "loss": loss}
        if flops is not None:
            columns["flops"] = flops
        arrays = {name: _column(values, name, source) for name, values in columns.items()}
        lengths = {name: arr.shape[0] for name, arr in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise UserError(f"{source}: columns have different lengths {lengths}")
        n = lengths["params"]
        if n < MIN_POINTS:
            raise UserError(
                f"{source}: {n} point(s), but the law L = E + A/N^alpha + B/D^beta has {N_PARAMS} parameters; "
                f"give at least {MIN_POINTS} runs"
            )
        if "flops" not in arrays:
            arrays["flops"] = training_flops(arrays["params"], arrays["tokens"])
        return cls(**arrays)

    def __len__(self) -> int:
        return int(self.params.shape[0])

    @property
    def log(self) -> LogData:
        return LogData.from_arrays(self.params, self.tokens, self.loss)

    def subset(self, mask: np.ndarray) -> ScalingData:
        return ScalingData(self.params[mask], self.tokens[mask], self.loss[mask], self.flops[mask])

    def without_highest_losses(self, count: int) -> ScalingData:
        """Drop the ``count`` runs with the highest loss (Besiroglu et al. 2024 drop 5 before refitting).

        Follows their rule exactly: keep the rows whose loss is strictly below the count-th highest loss,
        so ties at that value go too.
        """
        if count < 0:
            raise UserError(f"the number of highest losses to drop must be >= 0, got {count}")
        if count == 0:
            return self
        if count >= len(self):
            raise UserError(f"cannot drop the {count} highest losses of {len(self)} points")
        threshold = np.sort(self.loss)[-count]
        kept = self.subset(self.loss < threshold)
        if len(kept) < MIN_POINTS:
            raise UserError(f"dropping the {count} highest losses leaves {len(kept)} points; need {MIN_POINTS}")
        return kept


def _column(values, name: str, source: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: column '{name}' is not numeric ({exc})") from None
    if arr.ndim != 1:
        raise UserError(f"{source}: column '{name}' must be one-dimensional, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise UserError(f"{source}: column '{name}' has {bad.size} missing or non-finite value(s), first at row "
                        f"{bad[0] + 1} ({arr[bad[0]]})")
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        raise UserError(f"{source}: column '{name}' must be positive; row {bad[0] + 1} has {arr[bad[0]]:g}"
                        f" ({bad.size} such row(s))")
    return arr
