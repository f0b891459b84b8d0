"""What the CLI prints at the end of a study."""

from __future__ import annotations


def num(value, spec: str = ".4f") -> str:
    """A number for people; 'n/a' where a fit or interval could not be computed (None or NaN in fit.json)."""
    return "n/a" if value is None or value != value else format(value, spec)


def minima_admit_line(admitted: dict, loss_interval) -> str:
    """What the grid's IsoFLOP minima alone admit at the first target, and whether the interval claims more."""
    low, high = admitted["low"][0], admitted["high"][0]
    line = f"  its {admitted['budgets']} IsoFLOP minima alone admit {num(low)}-{num(high)} there"
    if loss_interval and None not in loss_interval and loss_interval[1] - loss_interval[0] < high - low:
        line += ("; the narrower interval rests on the pinned exponent, the law through every run and the "
                 "calibration on public ladders")
    return line


def interval(pair) -> str:
    return f"[{num(pair[0])}, {num(pair[1])}]" if pair else "[n/a]"


def outside_note(loss, pair) -> str:
    """Why a predictor's point can lie outside its own interval: the interval is a pivot bootstrap
    (docs/scaling.md), so it carries the bias the simulated studies find in that predictor (a pure power law
    has no floor and extrapolates low by construction); the point is the predictor's own, uncorrected."""
    if not pair or any(v is None or v != v for v in (loss, *pair)):  # n/a or NaN: nothing to compare
        return ""
    if pair[0] <= loss <= pair[1]:
        return ""
    side = "low" if loss < pair[0] else "high"
    return f"; biased {side} in simulation: the interval corrects for it, the point does not"


def outcome_summary(outcome, full_grid: bool | None = None) -> str:
    """The study's summary; ``full_grid``: every run's loss (default for ``raylm study show``), else the best
    run of each budget (a live study printed every run as it finished)."""
    from raylm.tracking.links import run_link, runs_link

    if outcome.elapsed_s is None:  # raylm study show: refitted from the study's record
        head = (f"study {outcome.directory.name}: {len(outcome.results)} grid runs, from its record in "
                f"{outcome.directory}")
    else:
        head = (f"study finished in {outcome.elapsed_s / 60:.1f} min: {len(outcome.results)} grid runs "
                f"({sum(r.reused for r in outcome.results)} reused), results in {outcome.directory}")
    full = outcome.elapsed_s is None if full_grid is None else full_grid
    lines = [head, "", "grid (final validation loss on the fixed held-out set"
             + ("):" if full else "; every run: raylm study show DIR):")]
    lines += grid_lines(outcome.results) if full else best_lines(outcome.results)
    if outcome.edges is not None:  # which budgets' minima were at an edge, and the sizes added there
        lines += ["", *outcome.edges.summary()]
    lines += ["", "predictions at the target budget(s), best backtest first:"]
    rows = list(_predictor_rows(outcome.fit))
    width = max((len(name) for name, _ in rows), default=0)
    for name, row in rows:
        lines.append(f"  {name:<{width}} {row}")
    top = outcome.recommended[0]
    lines += ["", f"backtest: {outcome.fit.get('reason', '')}"]
    lines += [f"recommended ({top['approach']}): at C={top['budget']:.3g} train N*={top['n_opt']:,.0f} on "
              f"D*={top['d_opt']:,.0f} tokens ({top['d_opt'] / top['n_opt']:.1f} per parameter); predicted loss "
              f"{num(top['loss'])}, {100 * top['level']:.0f}% interval {interval(top.get('loss_interval'))}"]
    admitted = outcome.fit.get("minima_admit")
    if admitted:
        lines.append(minima_admit_line(admitted, top.get("loss_interval")))
    for path in outcome.answers:
        lines.append(f"  train it: raylm train --config {path}")
    m = outcome.metrics
    if "verify/loss" in m:
        lines.append(f"verification: N={m['verify/n']:,.0f} D={m['verify/d']:,.0f}: measured {m['verify/loss']:.4f}, "
                     f"error (predicted - measured) / measured = {100 * m['verify/rel_error']:+.2f}%"
                     f"; {'inside' if m.get('verify/in_run_interval') else 'outside'} the interval for one run "
                     f"{interval(top.get('run_interval'))}")
    for key, value in m.items():
        if key.startswith("verify/compare"):
            lines.append(f"  comparison run ({key.split('/')[1].removesuffix('_loss')} tokens/param): {value:.4f}")
    if outcome.parent_run_id and outcome.experiment_id:
        parent_link = run_link(outcome.tracking_uri, outcome.experiment_id, outcome.parent_run_id)
        lines += ["", f"MLflow parent run: {parent_link}",
                  f"its runs: {runs_link(outcome.tracking_uri, outcome.experiment_id, outcome.parent_run_id)}"]
        if outcome.tracking_uri.startswith("sqlite:///"):
            lines.append("(serve the UI first: make ui)")
    return "\n".join(lines)


def _ordered(results) -> list:
    return sorted(results, key=lambda r: (r.point.grid.budget, r.point.grid.params))


def grid_lines(results) -> list[str]:
    lines = []
    for r in _ordered(results):
        g = r.point.grid
        loss = f"{r.loss:.4f}" if r.loss is not None else r.status
        lines.append(f"  C={g.budget:.2g}  N={g.params:>9,}  D={g.tokens:>11,}  D/N={g.tokens / g.params:7.1f}  "
                     f"loss {loss}")
    return lines


def best_lines(results) -> list[str]:
    """One line per budget: its best run, and where it sits among the sizes trained."""
    lines = []
    for budget in sorted({r.point.grid.budget for r in results}):
        group = [r for r in _ordered(results) if r.point.grid.budget == budget]
        done = [r for r in group if r.loss is not None]
        failed = len(group) - len(done)
        tail = f", {failed} failed" if failed else ""
        if not done:
            lines.append(f"  C={budget:.2g}  no run finished ({len(group)} failed)")
            continue
        best = min(done, key=lambda r: r.loss)
        g = best.point.grid
        place = ("the smallest size trained" if best is done[0] else "the largest size trained" if best is done[-1]
                 else "inside the sizes trained")
        lines.append(f"  C={budget:.2g}  best N={g.params:,} D={g.tokens:,} (D/N={g.tokens / g.params:.1f}) loss "
                     f"{best.loss:.4f}: {place} (N {done[0].point.grid.params:,} to {done[-1].point.grid.params:,}, "
                     f"{len(done)} runs{tail})")
    return lines


def _predictor_rows(fit: dict):
    errors = (fit.get("backtest") or {}).get("rel_error") or {}
    ranking = (fit.get("backtest") or {}).get("ranking") or []
    names = ranking + [n for n in fit.get("predictions", {}) if n not in ranking]
    for name in names:
        for p in fit.get("predictions", {}).get(name, []):
            error = errors.get(name)
            backtest = f"backtest error {100 * error:+.2f}%" if error is not None else "no backtest"
            yield name, (f"C={p['budget']:.3g}: N*={num(p['n_opt'], ',.0f')} D*={num(p['d_opt'], ',.0f')} loss "
                         f"{num(p['loss'])} {interval(p.get('loss_interval'))}  ({backtest}"
                         f"{outside_note(p['loss'], p.get('loss_interval'))})")
    for name, reason in (fit.get("unavailable") or {}).items():
        yield name, f"unavailable: {reason}"
