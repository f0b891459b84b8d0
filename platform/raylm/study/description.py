"""The study's story in Markdown for its MLflow parent run's Description (the ``mlflow.note.content`` tag,
which the MLflow UI shows and edits as the run's description): the question, the grid, the recommended
allocation with its interval, the verification and its error, and where the plots are; which budgets had their
minimum at an edge of their sizes, and the sizes added there (:mod:`raylm.study.edges`)."""

from __future__ import annotations

from raylm.study.results import StudyOutcome
from raylm.study.summary import interval, num

NOTE_TAG = "mlflow.note.content"
MAX_CHARS = 7500  # MLflow keeps tag values up to 8,000 characters


def study_description(outcome: StudyOutcome, name: str, plots: list[str]) -> str:
    budgets = sorted({r.point.grid.budget for r in outcome.results})
    targets = ", ".join(f"{r['budget']:.3g}" for r in outcome.recommended)
    edges = outcome.edges.budgets if outcome.edges is not None else []
    added = {r.point.label for b in edges for r in b.added}
    sizes = (len(outcome.results) - len(added)) // max(1, len(budgets))
    lines = [f"## Scaling study {name}",
             "",
             f"**Question:** at {targets} FLOPs, which model size N and token count D give the lowest loss, "
             "and what loss?",
             "",
             f"**Grid:** {len(budgets)} budgets ({', '.join(f'{b:.3g}' for b in budgets)} FLOPs) x "
             f"{sizes} sizes{f' and {len(added)} added at edges' if added else ''}, {len(outcome.results)} runs; "
             "final validation loss of each:",
             "",
             "| budget | N | D | D/N | loss |",
             "|---|---|---|---|---|"]
    for r in sorted(outcome.results, key=lambda r: (r.point.grid.budget, r.point.grid.params)):
        g = r.point.grid
        mark = " (added at an edge)" if r.point.label in added else ""
        lines.append(f"| {g.budget:.3g} | {g.params:,}{mark} | {g.tokens:,} | {g.tokens / g.params:.1f} | "
                     f"{num(r.loss) if r.loss is not None else r.status} |")
    lines.append("")
    if outcome.edges is not None:
        lines += ["**Edges:** " + ("every budget's minimum lies inside its sizes." if not edges else
                                   "where a budget's minimum was at its smallest or largest size (an extrapolated "
                                   "optimum), the study trained sizes beyond it:"), ""]
        lines += [f"- {b.line()}" for b in edges] + ([""] if edges else [])
    for r in outcome.recommended:
        lines.append(f"**Recommended ({r['approach']}) at C={r['budget']:.3g}:** N* = {r['n_opt']:,.0f}, "
                     f"D* = {r['d_opt']:,.0f} tokens ({r['d_opt'] / r['n_opt']:.1f} per parameter), predicted loss "
                     f"{num(r['loss'])}, {100 * r['level']:.0f}% interval {interval(r.get('loss_interval'))}.")
    m = outcome.metrics
    if "verify/loss" in m:
        inside = "inside" if m.get("verify/in_run_interval") else "outside"
        lines += ["", f"**Verification:** N = {m['verify/n']:,.0f}, D = {m['verify/d']:,.0f}: measured "
                      f"{m['verify/loss']:.4f}, error (predicted - measured) / measured = "
                      f"{100 * m['verify/rel_error']:+.2f}%, {inside} the interval for one run "
                      f"{interval(outcome.recommended[0].get('run_interval'))}."]
    if outcome.answers:
        lines += ["", "**Ready to run:** " + ", ".join(f"`{p.name}`" for p in outcome.answers)
                  + " (artifacts; `raylm train --config FILE`)."]
    if plots:
        lines += ["", "**Plots** (artifacts): " + ", ".join(f"`{p}`" for p in plots) + "."]
    text = "\n".join(lines)
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS - 40] + "\n\n(cut; see results.csv)"
