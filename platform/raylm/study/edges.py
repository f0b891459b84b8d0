"""Grids that fix their own edges: sizes added beyond a budget's smallest or largest model when its
minimum lies there, trained before the fits.

Approach 2 (Hoffmann et al. 2022, section 3.2) reads a budget's optimum N*(C) off the minimum of a
parabola fitted to the final loss in log N; that minimum is a measurement only when the sizes trained
surround it. When a budget's best run is its smallest or largest model, or its parabola's vertex lies
outside its sizes, the optimum is an extrapolation: Approach 2 leaves the budget out, and the other
fits lean on a grid whose minimum sits on its edge, where their bias is largest. So the study trains
sizes beyond that edge, at that budget, in rounds of one size per budget, until every budget's minimum
lies inside its sizes or a limit stops it:

- the next size continues the grid's own geometric spacing, ``spread ** (1 / (points_per_budget - 1))``,
  from the budget's outermost size, realised as the family's model closest to it beyond that size (the
  way the grid picks its models), trained by the study's rules (D = C / 6N in whole steps, warmup,
  evaluations) and fitted with the grid;
- below the family's smallest shape (one layer of one head of ``head_dim``), where depth cannot shrink, the
  smaller sizes are narrower: one layer, one head as wide as the model (d_model < ``head_dim``), even widths
  down to NARROW_MIN_WIDTH (:func:`raylm.scaling.isoflop.narrow_shapes`), used only when the family's own
  shapes have nothing smaller; the report names every size added with such a narrower head. The grid itself
  never uses them;
- at most ``edges.max_points_per_budget`` sizes are added per budget; none with fewer than ``min_steps``
  optimizer steps, none reading more than MAX_EPOCHS epochs of the corpus, none outside the family and its
  narrower one-head models (below d_model=NARROW_MIN_WIDTH, beyond ``max_layers``). Every edge left
  unextended is reported with why.

Nothing here trains or writes: the training is the ``train`` callable handed in (the study driver's, or
the study's record for ``raylm study show``), so a rerun of the study reaches the same sizes from the same
losses and finds them trained already.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from raylm.scaling.isoflop import NARROW_MIN_WIDTH, point_steps
from raylm.study.config import Study
from raylm.study.grid import MAX_EPOCHS, StudyPoint, edge_point, model_beyond, prior_optimum, training_shape
from raylm.study.results import PointResult

SIZE_WORD = {"small": "smallest", "large": "largest"}
EDGES_TAG = "raylm.edges"  # the parent run's tag: which budgets were extended, which are still at an edge


@dataclass(frozen=True)
class Edge:
    """A budget's minimum at an edge: ``side`` is "small" (at or below its smallest size) or "large"."""

    side: str
    why: str  # e.g. "its best loss (4.1453) is at its smallest size, N=6,008"


def edge_of(params: Sequence[float], losses: Sequence[float]) -> Edge | None:
    """Whether the minimum of one budget's finished runs lies at an edge of their sizes: the best run is the
    smallest or largest, or (with an interior best run) the vertex of the convex parabola of loss in log N
    lies outside the sizes. None when the minimum lies inside (or a concave profile has no vertex to place)."""
    order = np.argsort(np.asarray(params, dtype=float))
    n, loss = np.asarray(params, dtype=float)[order], np.asarray(losses, dtype=float)[order]
    if n.size < 2:
        return None
    best = int(np.argmin(loss))
    if best in (0, n.size - 1):
        side = "small" if best == 0 else "large"
        return Edge(side, f"its best loss ({loss[best]:.4f}) is at its {SIZE_WORD[side]} size, N={n[best]:,.0f}")
    c2, c1, _ = np.polyfit(np.log(n), loss, 2)  # an interior best run: three or more sizes
    if not c2 > 0:
        return None
    vertex = math.exp(-c1 / (2 * c2))
    if vertex < n[0]:
        return Edge("small", f"its parabola's minimum (N={vertex:,.0f}) lies below its smallest size, N={n[0]:,.0f}")
    if vertex > n[-1]:
        return Edge("large", f"its parabola's minimum (N={vertex:,.0f}) lies above its largest size, N={n[-1]:,.0f}")
    return None


def grid_step(study: Study) -> float:
    """The grid's ratio between neighbouring sizes: ``spread`` over ``points_per_budget - 1`` steps."""
    return study.config.spread ** (1.0 / (study.config.points_per_budget - 1))


def next_point(study: Study, budget: float, sizes: Sequence[int], side: str,
               corpus_tokens: int | None = None) -> StudyPoint | str:
    """The next size beyond the ``side`` edge of ``sizes`` (every size trained at ``budget``) as a grid point,
    or why there is none (``corpus_tokens``: the corpus's training tokens; None leaves the corpus unchecked)."""
    cfg = study.config
    edge = min(sizes) if side == "small" else max(sizes)
    target = edge / grid_step(study) if side == "small" else edge * grid_step(study)
    model = model_beyond(study, edge, target)
    if model is None:
        return (f"the family has no smaller model than N={edge:,}, one-head models narrower than "
                f"family.head_dim={cfg.family.head_dim} included (none is narrower than d_model={NARROW_MIN_WIDTH})"
                if side == "small" else f"the family has no larger model than N={edge:,} (raise family.max_layers)")
    config, params = model
    which = "smaller" if side == "small" else "larger"
    steps = point_steps(budget, params, training_shape(study))
    if steps < cfg.min_steps:
        return (f"the next {which} model, N={params:,}, would train {steps} optimizer steps, fewer than "
                f"min_steps={cfg.min_steps}")
    point = edge_point(study, budget, config, params)
    if corpus_tokens and point.grid.tokens > MAX_EPOCHS * corpus_tokens:
        return (f"the next {which} model, N={params:,}, would read {point.grid.tokens:,} tokens, "
                f"{point.grid.tokens / corpus_tokens:.1f} epochs of the corpus's {corpus_tokens:,} training tokens "
                f"(more than {MAX_EPOCHS:g})")
    return point


def narrower_head(model: dict, head_dim: int) -> str:
    """How a size added beyond an edge departs from the family's head width: "" for a model of heads of
    ``head_dim``, " (one head of width 6, narrower than family.head_dim=8)" for a narrower one-head model."""
    heads = model["n_heads"]
    width = model["d_model"] // heads
    if width >= head_dim:
        return ""
    return (f" ({'one head' if heads == 1 else f'{heads} heads'} of width {width}, narrower than "
            f"family.head_dim={head_dim})")


@dataclass
class BudgetEdge:
    """One budget whose minimum was at an edge: why, the sizes added beyond it, and where it ended."""

    budget: float
    first: Edge                      # the edge that started it
    added: list[PointResult] = field(default_factory=list)
    now: Edge | None = None          # the edge after the last size added; None once the minimum is inside
    limit: str | None = None         # why no further size was added while at an edge
    head_dim: int = 0                # the family's head width: an added size with narrower heads is named so

    def narrow(self, result: PointResult) -> bool:
        return bool(narrower_head(result.point.grid.model, self.head_dim))

    def line(self) -> str:
        head = f"C={self.budget:.3g}: {self.first.why}"
        if not self.added:
            return f"{head}; not extended: {self.limit}"
        sizes = ", ".join(f"N={r.point.grid.params:,}{narrower_head(r.point.grid.model, self.head_dim)}"
                          for r in self.added)
        if self.now is None:
            return f"{head}; added {sizes}: its minimum is now inside its sizes"
        return f"{head}; added {sizes}; still at an edge: {self.limit}"

    def as_dict(self) -> dict:
        return {"budget": self.budget, "side": self.first.side, "why": self.first.why,
                "added": [{"label": r.point.label, "params": r.point.grid.params, "tokens": r.point.grid.tokens,
                           "d_model": r.point.grid.model["d_model"], "n_heads": r.point.grid.model["n_heads"],
                           "narrower_head": self.narrow(r), "loss": r.loss, "status": r.status}
                          for r in self.added],
                "inside_now": self.now is None, "now": self.now.why if self.now else None, "limit": self.limit}


@dataclass
class EdgeReport:
    """Every budget whose minimum was at an edge, in budget order (empty: every minimum inside)."""

    budgets: list[BudgetEdge]

    @property
    def extended(self) -> list[BudgetEdge]:
        return [b for b in self.budgets if b.added]

    @property
    def at_an_edge(self) -> list[BudgetEdge]:
        """The budgets whose minimum is still at an edge: their optimum is an extrapolation."""
        return [b for b in self.budgets if b.now is not None]

    def summary(self) -> list[str]:
        if not self.budgets:
            return ["edges: every budget's minimum lies inside its sizes"]
        return [f"edges: {len(self.extended)} budget(s) extended, {len(self.at_an_edge)} still at an edge (an "
                "extrapolated minimum):", *(f"  {b.line()}" for b in self.budgets)]

    def tag(self) -> str:
        """One line for the parent run's ``raylm.edges`` tag."""
        if not self.budgets:
            return "every minimum inside"
        parts = [f"extended {', '.join(_tag_part(b) for b in self.extended)}"] if self.extended else []
        if self.at_an_edge:
            parts.append(f"still at an edge {', '.join(f'{b.budget:.3g}' for b in self.at_an_edge)}")
        return "; ".join(parts) or "every minimum inside after extension"

    def as_dict(self) -> dict:
        return {"budgets": [b.as_dict() for b in self.budgets],
                "extended": [b.budget for b in self.extended], "at_an_edge": [b.budget for b in self.at_an_edge]}


def _tag_part(b: BudgetEdge) -> str:
    narrow = sum(b.narrow(r) for r in b.added)
    return f"{b.budget:.3g} (+{len(b.added)}{f', {narrow} with a narrower head' if narrow else ''})"


Train = Callable[[list[StudyPoint]], list[PointResult]]


def extend_edges(study: Study, results: list[PointResult], train: Train, corpus_tokens: int | None = None,
                 log=print) -> tuple[list[PointResult], EdgeReport]:
    """Rounds of one size per budget at an edge, trained with ``train`` (results matched by label; a point it
    returns nothing for is not trained), until no budget at an edge can take another (see the module
    docstring): every result, those of the added sizes after the grid's, and the report."""
    results, states = list(results), {}
    while True:
        round_points = []
        for budget in study.config.budgets:
            state = states.get(budget)
            if state is not None and state.limit is not None:
                continue
            finished = [r for r in results if r.point.grid.budget == budget and r.loss is not None
                        and math.isfinite(r.loss)]
            edge = edge_of([r.point.grid.params for r in finished], [r.loss for r in finished])
            if state is not None:
                state.now = edge
            if edge is None:
                continue
            state = states.setdefault(budget, BudgetEdge(budget, edge, now=edge,
                                                         head_dim=study.config.family.head_dim))
            sizes = [r.point.grid.params for r in results if r.point.grid.budget == budget]
            proposal = proposal_for(study, budget, sizes, edge.side, len(state.added), corpus_tokens)
            if isinstance(proposal, str):
                state.limit = proposal
                log(f"edges: C={budget:.3g}: {edge.why}; not extended{' further' if state.added else ''}: {proposal}")
            else:
                round_points.append((state, proposal))
                log(f"edges: C={budget:.3g}: {edge.why}; adding N={proposal.grid.params:,} ({proposal.label})"
                    f"{narrower_head(proposal.grid.model, study.config.family.head_dim)}")
        if not round_points:
            return results, EdgeReport([states[b] for b in study.config.budgets if b in states])
        trained = {r.point.label: r for r in train([p for _, p in round_points])}
        for state, point in round_points:
            result = trained.get(point.label)
            if result is None:
                state.limit = f"{point.label} was not trained (the study's record holds no run of it)"
                continue
            results.append(result)
            state.added.append(result)
            if result.loss is None:
                state.limit = f"{point.label} did not finish ({result.status})"


def proposal_for(study: Study, budget: float, sizes: list[int], side: str, added: int,
                 corpus_tokens: int | None) -> StudyPoint | str:
    """The next size beyond the ``side`` edge of ``sizes`` at ``budget`` after ``added`` sizes, or why there is none
    (extension off, the cap, or :func:`next_point`'s limits)."""
    cfg = study.config.edges
    if not cfg.extend:
        return "edge extension is off (edges.extend: false)"
    if added >= cfg.max_points_per_budget:
        return (f"the cap of {cfg.max_points_per_budget} added size(s) per budget (edges.max_points_per_budget) "
                "is reached")
    return next_point(study, budget, sizes, side, corpus_tokens)


def prior_warnings(study: Study, grid: list[StudyPoint], corpus_tokens: int | None = None) -> list[str]:
    """For ``raylm study plan``: each budget whose prior optimum (its grid's centre) sits near an edge of the
    sizes the family gave it, closer than one grid step and more than half a step nearer than the grid aimed
    for (the family clipped the grid), with what the study will do if the minimum lands there."""
    cfg = study.config
    step = math.log(grid_step(study))
    near = min(1.0, (cfg.points_per_budget - 1) / 2 - 0.5)  # in grid steps; a centred grid has (k - 1) / 2
    lines = []
    for budget in cfg.budgets:
        sizes = [p.grid.params for p in grid if p.grid.budget == budget]
        optimum = prior_optimum(study, budget)
        for side, edge in (("small", min(sizes)), ("large", max(sizes))):
            distance = math.log(optimum / edge if side == "small" else edge / optimum) / step  # inward
            if distance >= near:
                continue
            where = (f"{distance:.1f} grid steps {'above' if side == 'small' else 'below'} its {SIZE_WORD[side]} "
                     f"size, N={edge:,}" if distance >= 0 else f"beyond its {SIZE_WORD[side]} size, N={edge:,}")
            proposal = proposal_for(study, budget, sizes, side, 0, corpus_tokens)
            if isinstance(proposal, str):
                then = (f"the study cannot extend it: {proposal}; another prior (prior.tokens_per_param, "
                        "prior.law) moves the grid")
            else:
                which = "smaller" if side == "small" else "larger"
                then = (f"the study adds up to {cfg.edges.max_points_per_budget} {which} size(s) there "
                        f"(edges.max_points_per_budget), first N={proposal.grid.params:,}"
                        f"{narrower_head(proposal.grid.model, cfg.family.head_dim)}")
            lines.append(f"warning: at C={budget:.3g} the prior's optimum, N={optimum:,.0f}, is {where}: if the "
                         f"minimum lands there, {then}")
    return lines
