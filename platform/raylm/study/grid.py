"""A study's IsoFLOP grid as training runs: shapes from the family, steps and warmup from the
budget, evaluations along each run, and every impossible grid stopped with its numbers.

Each point is its own run with a cosine schedule exactly as long as its own D (Hoffmann et al.
2022, Appendix D), warmup of ``warmup_tokens_per_param`` x N tokens (Porian et al. 2024), and
the final validation loss measured on one fixed held-out token set, the same for every point
(the first ``train.eval_batches`` micro-batches of the validation split).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from raylm.config import RunConfig
from raylm.config_load import apply_overrides
from raylm.errors import UserError
from raylm.scaling.isoflop import (
    GridPoint,
    ModelFamily,
    TrainingShape,
    family_model_beyond,
    isoflop_grid,
    sized_point,
)
from raylm.scaling.laws import ChinchillaLaw
from raylm.study.config import Study

MAX_EPOCHS = 4.0  # Muennighoff et al. (2023): up to ~4 epochs of repeated data cost little


@dataclass(frozen=True)
class StudyPoint:
    """One training run of the study: a grid point or a verification run."""

    kind: str                # "grid" or "verify"
    label: str               # e.g. "C1e+12-N46K"
    grid: GridPoint
    eval_every: int
    checkpoint_every: int = 0  # 0: at the end only

    @property
    def overrides(self) -> dict:
        g = self.grid
        model = {f"model.{k}": v for k, v in g.model.items() if not isinstance(v, dict)}
        model.update({f"model.moe.{k}": v for k, v in g.model.get("moe", {}).items()})
        return {**model, "train.max_steps": g.steps, "train.warmup_steps": g.warmup, "train.seq_len": g.seq_len,
                "train.global_batch_size": g.global_batch_size, "train.eval_every": self.eval_every,
                "train.checkpoint_every": self.checkpoint_every or g.steps,
                "train.export_model": self.kind != "grid",  # only a verification run's model is used
                "tracking.log_model": self.kind != "grid"}  # and shown among its run's logged models

    def tokens_per_param(self) -> float:
        return self.grid.tokens / self.grid.params


def family_of(study: Study) -> ModelFamily:
    fam = study.config.family
    model_base = {**study.base_config.model.model_dump(mode="json"), **fam.base}
    for key in ("d_model", "n_layers", "n_heads", "d_ff", "n_kv_heads", "n_decoder_layers"):
        model_base.pop(key, None)
    model_base["max_seq_len"] = max(model_base.get("max_seq_len", 0), study.config.seq_len)
    return ModelFamily(base=model_base, aspect_ratio=fam.aspect_ratio, head_dim=fam.head_dim,
                       max_layers=fam.max_layers, aspect_tolerance=fam.aspect_tolerance)


def prior_of(study: Study):
    prior = study.config.prior
    if prior.law is not None:
        return ChinchillaLaw(**prior.law)
    ratio = prior.tokens_per_param
    return lambda c: math.sqrt(c / (6.0 * ratio))


def training_shape(study: Study) -> TrainingShape:
    cfg = study.config
    return TrainingShape(cfg.seq_len, cfg.global_batch_size, cfg.warmup_tokens_per_param, cfg.max_warmup_fraction)


def prior_optimum(study: Study, budget: float) -> float:
    """The N the prior puts at ``budget``'s optimum: the centre of that budget's grid (in log N)."""
    prior = prior_of(study)
    return float(prior.optimal_params(budget)) if isinstance(prior, ChinchillaLaw) else float(prior(budget))


def _counters() -> dict:
    """The model room's parameter and FLOP counters, handed to the pure grid builder."""
    from raylm.model.counting import count_params, flops_per_token

    return {"count_params": count_params, "flops_per_token": flops_per_token}


def build_grid(study: Study) -> list[StudyPoint]:
    """Every grid point, checked: increasing budgets, enough points, steps and tokens per point."""
    cfg = study.config
    check_budgets(cfg.budgets, cfg.targets, cfg.points_per_budget)
    points = isoflop_grid(cfg.budgets, family_of(study), k=cfg.points_per_budget, spread=cfg.spread,
                          prior=prior_of(study), shape=training_shape(study), **_counters())
    per_budget = {b: [p for p in points if p.budget == b] for b in cfg.budgets}
    for budget, group in per_budget.items():
        if len(group) < 3:
            raise UserError(f"budget {budget:.3g} has only {len(group)} distinct model sizes in the family; an "
                            "IsoFLOP fit needs 3 or more: widen spread, raise family.max_layers or lower head_dim")
    problems = [f"budget {p.budget:.3g}, N={p.params:,}: {p.steps} optimizer steps (D={p.tokens:,} tokens at "
                f"{p.global_batch_size * p.seq_len:,} tokens per step) is below min_steps={cfg.min_steps}"
                for p in points if p.steps < cfg.min_steps]
    if problems:
        smallest = min(cfg.budgets)
        raise UserError("budgets too small for the grid:\n  " + "\n  ".join(problems) +
                        f"\n  raise the smallest budget ({smallest:.3g}), lower global_batch_size or seq_len, "
                        "or lower min_steps")
    return [StudyPoint("grid", label(p), p, *_cadence(p.steps, cfg)) for p in points]


def check_budgets(budgets: list[float], targets: list[float], points_per_budget: int) -> None:
    if points_per_budget < 3:
        raise UserError(f"points_per_budget is {points_per_budget}; an IsoFLOP parabola needs 3 or more (use 5)")
    if any(b <= 0 for b in budgets) or any(b2 <= b1 for b1, b2 in zip(budgets, budgets[1:], strict=False)):
        raise UserError(f"budgets must be positive and increasing, got {budgets}")
    low = [t for t in targets if t <= max(budgets)]
    if low:
        raise UserError(f"target budget(s) {', '.join(f'{t:.3g}' for t in low)} are not above the grid's largest "
                        f"budget ({max(budgets):.3g}); a prediction is for compute the grid did not spend")


def _cadence(steps: int, cfg) -> tuple[int, int]:
    """Steps between evaluations, and between checkpoints: ``checkpoints_per_point`` of them along the run,
    each at an evaluation (a checkpoint reports the evaluation it was taken with), so a killed study
    continues a point from its newest one."""
    eval_every = max(1, steps // cfg.evals_per_point)
    if cfg.checkpoints_per_point <= 1:
        return eval_every, steps
    evals_per_checkpoint = max(1, round(cfg.evals_per_point / cfg.checkpoints_per_point))
    return eval_every, min(steps, eval_every * evals_per_checkpoint)


def label(point: GridPoint) -> str:
    return f"C{point.budget:.2g}-N{_short(point.params)}"


def _short(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def point_run(study: Study, point: StudyPoint) -> dict:
    """The point's full run config as a plain dict."""
    return apply_overrides(study.base, list(point.overrides.items()))


def point_config(study: Study, point: StudyPoint) -> RunConfig:
    """The point's full run config, validated (impossible points fail here with the point named)."""
    return RunConfig.from_dict(point_run(study, point), f"the study's point {point.label}")


def point_key(study: Study, point: StudyPoint, manifest_key: str) -> str:
    """A hash of everything that decides the point's result: its full run config and the data manifest.
    Paths (where outputs go, where the store is), the checkpoint cadence, the model export and step delays are
    left out:
    moving a study does not retrain it."""
    run = point_run(study, point)
    run = {k: v for k, v in run.items() if k not in ("name", "output_dir", "tracking")}
    run.get("data", {}).pop("shards_dir", None)
    run.get("train", {}).pop("checkpoint_every", None)  # how often it saves does not change what it learns
    run.get("train", {}).pop("export_model", None)  # nor whether it writes the portable model at the end
    run.get("faults", {}).pop("step_delay_s", None)  # nor does a pause before each step
    blob = json.dumps({"run": run, "manifest": manifest_key}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def verification_point(study: Study, budget: float, n_target: float, kind: str = "verify") -> StudyPoint:
    """The family's model closest to ``n_target`` trained for D = C / (6N) at ``budget``."""
    cfg = study.config
    (grid,) = isoflop_grid([budget], family_of(study), k=1, spread=1.0, prior=lambda c: n_target,
                           shape=training_shape(study), **_counters())
    return StudyPoint(kind, f"{kind}-{label(grid)}", grid, *_cadence(grid.steps, cfg))


def model_beyond(study: Study, edge_n: int, target_n: float):
    """The family's model closest to ``target_n`` strictly beyond ``edge_n`` (smaller when ``target_n`` is
    smaller): ``(model config, N)``, or None when the family has no model on that side."""
    return family_model_beyond(family_of(study), edge_n, target_n, seq_len=study.config.seq_len,
                               count_params=_counters()["count_params"])


def edge_point(study: Study, budget: float, model, params: int) -> StudyPoint:
    """A size added beyond a budget's edge (:mod:`raylm.study.edges`): a grid point like the others (fitted with
    them), trained by the same rules, labelled ``...-edge``."""
    grid = sized_point(budget, model, params, training_shape(study), _counters()["flops_per_token"])
    return StudyPoint("grid", f"{label(grid)}-edge", grid, *_cadence(grid.steps, study.config))


def format_grid(points: list[StudyPoint]) -> str:
    header = ["budget", "N", "layers", "width", "heads", "D", "D/N", "steps", "warmup", "6ND", "FLOPs(attn)"]
    rows = []
    for p in points:
        g = p.grid
        rows.append([f"{g.budget:.2g}", f"{g.params:,}", str(g.model["n_layers"]), str(g.model["d_model"]),
                     str(g.model["n_heads"]), f"{g.tokens:,}", f"{p.tokens_per_param():.1f}", str(g.steps),
                     str(g.warmup), f"{g.flops:.3g}",
                     f"{g.flops_attention:.3g}" if g.flops_attention else "-"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows])
