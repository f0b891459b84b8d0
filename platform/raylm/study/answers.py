"""Answers ready to run: for each target budget, the run config of the recommended allocation.

``recommended_<target>.yaml`` in the study's directory is a complete run config that ``raylm train
--config`` trains as it is: the family's model closest to the recommended N*, trained for
D = C / (6N) tokens of that model at the target C, with the schedule, warmup, evaluation and
checkpoint cadence of the study's own rules (the same construction as the verification run,
:func:`raylm.study.grid.verification_point`), and the portable model exported at the end.
"""

from __future__ import annotations

from pathlib import Path

from raylm.config_load import to_yaml
from raylm.study.config import Study
from raylm.study.grid import point_config, verification_point
from raylm.study.summary import interval, num


def answer_name(budget: float) -> str:
    return f"recommended_{budget:.3g}.yaml"


def write_answers(study: Study, recommended: list[dict], directory: Path) -> list[Path]:
    """One run config per target budget in ``directory``; their paths, in the order of ``recommended``."""
    paths = []
    for r in recommended:
        point = verification_point(study, r["budget"], r["n_opt"], kind="recommended")
        cfg = point_config(study, point)
        cfg = cfg.model_copy(update={"name": f"{study.config.name}-{point.label}"})
        path = directory / answer_name(r["budget"])
        header = (f"# study {study.config.name}: the recommended allocation ({r['approach']}) at C={r['budget']:.3g} "
                  f"FLOPs: N*={r['n_opt']:,.0f}, D*={r['d_opt']:,.0f} tokens; predicted loss {num(r['loss'])}, "
                  f"{100 * r['level']:.0f}% interval {interval(r.get('loss_interval'))}\n"
                  f"# this config: the family's model closest to N* (N={point.grid.params:,}), "
                  f"D={point.grid.tokens:,} tokens in {point.grid.steps} steps\n"
                  f"# train it: raylm train --config {path}\n")
        path.write_text(header + to_yaml(cfg))
        paths.append(path)
    return paths
