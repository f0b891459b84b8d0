"""Sizes beyond a budget's edge trained beside the rest of the grid, as soon as that budget is done.

:func:`raylm.study.edges.extend_edges` adds sizes beyond an edge in rounds after the whole grid, and a
round of one or two small points then trains alone while the other trial slots idle (31 s of the demo,
most of it one idle core). The same decision needs only the budget's own runs, so
:class:`EdgesBeside`, the Tune searcher of the grid's trials, makes it the moment a budget's last run
ends, with the very rule of ``extend_edges`` (:func:`raylm.study.edges.edge_of` on the finished runs,
then its proposal: the grid's spacing, the cap, ``min_steps``, the corpus), and queues the new size
among the grid's remaining points. ``extend_edges`` then runs as before and finds every size it
decides to add already trained, in the study's record by its hash: the sizes, losses and report are
those of the rounds, only sooner.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ray.tune.search import Searcher

from raylm.study.config import Study
from raylm.study.edges import edge_of, proposal_for
from raylm.study.grid import StudyPoint
from raylm.tune.trial import POINT_KEY


@dataclass
class _Budget:
    """One budget's runs as the searcher knows them: every point (label -> point), the finished losses, the ended
    labels, and how many sizes it added."""

    points: dict[str, StudyPoint] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    added: int = 0
    closed: bool = False  # no further size: its minimum is inside, or a limit stopped it


class EdgesBeside(Searcher):
    """Tune's source of a study grid's trials: the pending points in order, then each budget's next size beyond an
    edge as soon as that budget's runs have all ended. ``payload(point)`` is a point's trial payload, ``known(point)``
    the final loss of a point that finished before (reused, not trained here), else None."""

    def __init__(self, study: Study, grid: list[StudyPoint], pending: list[StudyPoint],
                 known: Callable[[StudyPoint], float | None], payload: Callable[[StudyPoint], dict],
                 corpus_tokens: int | None):
        super().__init__(metric="val/loss", mode="min")
        self.study, self.known, self.payload, self.corpus_tokens = study, known, payload, corpus_tokens
        self.queue = list(pending)
        self.running: dict[str, StudyPoint] = {}
        self.budgets: dict[float, _Budget] = {}
        waiting = {p.label for p in pending}
        for point in grid:
            self.budgets.setdefault(point.grid.budget, _Budget()).points[point.label] = point
            if point.label not in waiting:
                self._ended(point, known(point))
        self.added: list[StudyPoint] = []  # the sizes queued beyond an edge, in order
        for value in list(self.budgets):
            self._next_size(value)

    def suggest(self, trial_id: str):
        if self.queue:
            point = self.queue.pop(0)
            self.running[trial_id] = point
            return {POINT_KEY: self.payload(point)}
        return None if self.running else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        point = self.running.pop(trial_id, None)
        if point is None:
            return
        loss = (result or {}).get("val/loss")
        finished = not error and (result or {}).get("step") == point.grid.steps
        self._ended(point, float(loss) if finished and isinstance(loss, (int, float)) else None)
        if point in self.added and point.label not in self.budgets[point.grid.budget].losses:
            self.budgets[point.grid.budget].closed = True  # an added size that did not finish stops the rounds too
        self._next_size(point.grid.budget)

    def _ended(self, point: StudyPoint, loss: float | None) -> None:
        budget = self.budgets[point.grid.budget]
        budget.ended.add(point.label)
        if loss is not None and math.isfinite(loss):
            budget.losses[point.label] = loss

    def _next_size(self, value: float) -> None:
        """Once every run of the budget has ended: its next size beyond an edge, queued first (it is what the fits
        wait for), unless its minimum is inside or a limit stops it."""
        budget = self.budgets[value]
        if budget.closed or set(budget.points) - budget.ended:
            return
        finished = [(budget.points[label].grid.params, loss) for label, loss in budget.losses.items()]
        edge = edge_of([n for n, _ in finished], [loss for _, loss in finished])
        if edge is None:
            budget.closed = True
            return
        sizes = [p.grid.params for p in budget.points.values()]
        point = proposal_for(self.study, value, sizes, edge.side, budget.added, self.corpus_tokens)
        if isinstance(point, str):
            budget.closed = True
            return
        budget.added += 1
        budget.points[point.label] = point
        self.added.append(point)
        loss = self.known(point)
        if loss is None:
            self.queue.insert(0, point)
        else:  # trained by an earlier run of the study
            self._ended(point, loss)
            self._next_size(value)
