"""Training curves of a scaling study: the loss of every run at several points during training.

Chinchilla's Approach 1 (Hoffmann et al. 2022, section 3.1) reads the compute-optimal frontier off
the envelope of these curves (:mod:`raylm.scaling.fit.approach1`). One point is (run id, N, tokens seen
so far, loss there); its compute is C = 6 N D_t (Kaplan et al. 2020, section 2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raylm.errors import UserError
from raylm.scaling.laws import training_flops


@dataclass(frozen=True)
class CurveData:
    """Curve points as arrays of equal length: ``run`` id, ``params`` N, ``tokens`` seen so far, ``loss``.

    ``params`` is constant within a run. Build it with :meth:`from_arrays` or :meth:`from_records`,
    which check every value.
    """

    run: np.ndarray
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray

    @classmethod
    def from_arrays(cls, run, params, tokens, loss, *, source: str = "curves") -> CurveData:
        """Validate (finite, positive, equal lengths, one N per run) and build; raises :class:`UserError`."""
        run_ids = np.asarray([str(r) for r in np.asarray(run, dtype=object).ravel()], dtype=object)
        columns = {name: _positive_column(values, name, source)
                   for name, values in (("params", params), ("tokens", tokens), ("loss", loss))}
        lengths = {"run": run_ids.size, **{name: arr.size for name, arr in columns.items()}}
        if len(set(lengths.values())) > 1:
            raise UserError(f"{source}: columns have different lengths {lengths}")
        if run_ids.size == 0:
            raise UserError(f"{source}: no curve points")
        for rid in np.unique(run_ids):
            sizes = np.unique(columns["params"][run_ids == rid])
            if sizes.size > 1:
                raise UserError(f"{source}: run {rid!r} has {sizes.size} different parameter counts "
                                f"({sizes.min():.4g} .. {sizes.max():.4g}); a run trains one model")
        return cls(run=run_ids, **columns)

    @classmethod
    def from_records(cls, records, *, source: str = "curves") -> CurveData:
        """From dicts with keys ``run``, ``params``, ``tokens``, ``loss`` (e.g. rows of a metrics table)."""
        rows = list(records)
        missing = sorted({"run", "params", "tokens", "loss"} - set().union(*(r.keys() for r in rows))) if rows else []
        if missing:
            raise UserError(f"{source}: curve records lack key(s) {', '.join(missing)}")
        try:
            return cls.from_arrays(*([r[k] for r in rows] for k in ("run", "params", "tokens", "loss")),
                                   source=source)
        except KeyError as exc:
            raise UserError(f"{source}: a curve record lacks key {exc}") from None

    def __len__(self) -> int:
        return int(self.loss.size)

    @property
    def flops(self) -> np.ndarray:
        """C = 6 N D_t of every point (Kaplan et al. 2020, section 2.1)."""
        return training_flops(self.params, self.tokens)

    @property
    def runs(self) -> list[str]:
        """Run ids, in order of first appearance."""
        _, first = np.unique(self.run, return_index=True)
        return [str(self.run[i]) for i in np.sort(first)]

    def curve(self, run_id: str) -> tuple[float, np.ndarray, np.ndarray]:
        """(N, tokens, loss) of one run, sorted by tokens."""
        mask = self.run == str(run_id)
        if not mask.any():
            raise UserError(f"no curve for run {run_id!r}; runs are {', '.join(self.runs)}")
        order = np.argsort(self.tokens[mask], kind="stable")
        return float(self.params[mask][0]), self.tokens[mask][order], self.loss[mask][order]

    def final_flops(self) -> dict[str, float]:
        """Compute of each run's last point, by run id."""
        return {rid: float(training_flops(n, tokens[-1])) for rid in self.runs for n, tokens, _ in [self.curve(rid)]}

    def subset_runs(self, run_ids) -> CurveData:
        keep = np.isin(self.run, np.asarray([str(r) for r in run_ids], dtype=object))
        return CurveData(self.run[keep], self.params[keep], self.tokens[keep], self.loss[keep])


def _positive_column(values, name: str, source: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: curve column '{name}' is not numeric ({exc})") from None
    bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
    if bad.size:
        raise UserError(f"{source}: curve column '{name}' must be positive and finite; point {bad[0] + 1} has "
                        f"{arr[bad[0]]!r} ({bad.size} such point(s))")
    return arr
