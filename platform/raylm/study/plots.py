"""The study's plots: IsoFLOP profiles with parabolas, N*(C) and D*(C), the loss-compute frontier
with the prediction and the verification run, and the Approach 1 envelope of all training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raylm.scaling.plots import new_figure, save_figure, write_plots
from raylm.study.results import scaling_data


def write_study_plots(out_dir: Path, outcome, study) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in outcome.results if r.loss is not None]
    point = getattr(outcome.recommendation, "point", None)
    paths = write_plots(out_dir, scaling_data(ok), approach2=getattr(point, "approach2", None),
                        approach3=getattr(point, "approach3", None), targets=study.config.targets)
    paths.append(plot_frontier(out_dir / "frontier.png", outcome, getattr(point, "frontier", None),
                               getattr(point, "frontier_gamma", None)))
    paths.append(plot_envelope(out_dir / "approach1_envelope.png", ok))
    return paths


def plot_frontier(path: Path, outcome, frontier, frontier_gamma=None) -> Path:
    """Best loss per budget, the fitted frontiers L*(C) (floor pinned; exponent pinned), the prediction with its
    interval, the verification."""
    fig, ax = new_figure(7, 4.5)
    by_budget: dict[float, list] = {}
    for r in outcome.results:
        if r.loss is not None:
            by_budget.setdefault(r.point.grid.budget, []).append(r)
    for _, group in sorted(by_budget.items()):
        ax.scatter([r.point.grid.flops for r in group], [r.loss for r in group], color="C0", s=14, alpha=0.5)
    minima = [(b, min(r.loss for r in g)) for b, g in sorted(by_budget.items())]
    ax.scatter(*zip(*minima, strict=True), color="C0", s=40, label="best run per budget")
    top = outcome.recommended[0]
    c = np.geomspace(min(by_budget) / 1.5, top["budget"] * 1.5, 100)
    for law, color, what in ((frontier, "C1", "floor pinned"), (frontier_gamma, "C2", "exponent pinned")):
        if law is not None:
            ax.plot(c, law(c), color=color,
                    label=f"frontier, {what}: L*(C) = {law.E:.3f} + ({law.C0:.3g}/C)^{law.gamma:.3f}")
    low, high = top.get("loss_interval") or (None, None)
    known = low is not None and high is not None and np.isfinite([low, high]).all()
    # an interval that does not hold its own prediction (a hull of others) still draws: bars never negative
    ax.errorbar([top["budget"]], [top["loss"]],
                yerr=[[max(0.0, top["loss"] - low)], [max(0.0, high - top["loss"])]] if known else None,
                fmt="*", color="red", ms=12, capsize=4,
                label=f"prediction ({top['approach']})" + (f", {100 * top.get('level', 0.9):.0f}% interval"
                                                           if known else ", no interval"))
    if outcome.verify and outcome.verify[0].loss is not None:
        v = outcome.verify[0]
        ax.scatter([v.point.grid.flops], [v.loss], marker="D", color="green", s=50, zorder=4,
                   label=f"verification run: {v.loss:.4f}")
    ax.set(xscale="log", xlabel="compute C = 6ND (FLOPs)", ylabel="validation loss",
           title="loss-compute frontier and the prediction")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_envelope(path: Path, results) -> Path:
    """Every run's validation curve against compute 6 N D_t, and their lower envelope (Hoffmann et al. 2022,
    Approach 1, Figure 2)."""
    fig, ax = new_figure(7, 4.5)
    points = []
    for r in results:
        if not r.curve:
            continue
        c = [6.0 * r.point.grid.params * t for t, _ in r.curve]
        ax.plot(c, [v for _, v in r.curve], color="grey", alpha=0.5, lw=1)
        points += list(zip(c, [v for _, v in r.curve], strict=True))
    if points:
        points.sort()
        cs, losses = np.array(points).T
        envelope = np.minimum.accumulate(losses)
        ax.plot(cs, envelope, color="red", lw=2, label="envelope: lowest loss at each compute")
    ax.set(xscale="log", xlabel="compute so far 6 N D_t (FLOPs)", ylabel="validation loss",
           title="Approach 1: training curves and their envelope")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
