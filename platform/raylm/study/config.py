"""The study file: a base run, a model family, budgets, the grid's shape, targets and verification.

::

    name: stdlib-study
    base: {...}                      # a run config (file or inline): data, optimizer, training defaults
    family: {aspect_ratio: 16, head_dim: 16, max_layers: 8, base: {arch: gpt, vocab_size: 512}}
    budgets: [1.0e11, 3.0e11, 1.0e12]   # FLOPs (6 N D), increasing
    points_per_budget: 5
    spread: 8                        # N spans spread-fold around the prior optimum
    prior: {tokens_per_param: 20}    # or {law: {E: .., A: .., B: .., alpha: .., beta: ..}}
    seq_len: 128
    global_batch_size: 16
    targets: [3.0e12]                # budgets to predict, above the grid
    edges: {extend: true, max_points_per_budget: 2}   # sizes added where a budget's minimum is at an edge
    verify: {enabled: true, compare_tokens_per_param: null}

Everything is checked when the file is loaded (:mod:`raylm.study.grid` checks the grid itself).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import Field, model_validator

from raylm.config import RunConfig, Section
from raylm.config_load import load_file
from raylm.tune.sweep_config import TrialsConfig, load_base_run


class FamilyConfig(Section):
    """How model shape follows size (:class:`raylm.scaling.isoflop.ModelFamily`)."""

    aspect_ratio: float = Field(16.0, gt=0, description="d_model / n_layers the shapes aim for.")
    head_dim: int = Field(16, ge=1)
    max_layers: int = Field(12, ge=1)
    aspect_tolerance: float = Field(2.0, ge=1)
    base: dict[str, Any] = Field(default_factory=dict, description="Other model keys (arch, vocab_size, ...).")


class PriorConfig(Section):
    """Where each budget's grid is centred: a tokens-per-parameter ratio or a fitted law."""

    tokens_per_param: Optional[float] = Field(20.0, gt=0, description="Chinchilla's 20 (Hoffmann et al. 2022).")
    law: Optional[dict[str, float]] = Field(None, description="E, A, B, alpha, beta of L(N, D).")


class EdgesConfig(Section):
    """Grids that fix their own edges (:mod:`raylm.study.edges`)."""

    extend: bool = Field(
        True, description="When a budget's best run is its smallest or largest size, or its IsoFLOP parabola's "
        "minimum lies outside its sizes, train sizes beyond that edge (the grid's own spacing) before fitting.")
    max_points_per_budget: int = Field(
        2, ge=0, description="At most this many sizes added per budget; also bounded by min_steps, the corpus "
        "(4 epochs) and the family's smallest and largest models.")


class VerifyConfig(Section):
    enabled: bool = True
    compare_tokens_per_param: Optional[float] = Field(
        None, gt=0, description="Also train this allocation at the target (e.g. 20) for comparison.")


class FitConfig(Section):
    level: float = Field(0.9, gt=0, lt=1, description="Interval level of the predictions.")
    simulations: int = Field(200, ge=0, description="Simulated studies behind every predictor's interval.")
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _old_name(cls, data: Any) -> Any:
        """``bootstrap``, the key's earlier name, still reads as ``simulations``."""
        if isinstance(data, dict) and "bootstrap" in data:
            if "simulations" in data:
                raise ValueError("give fit.simulations only (fit.bootstrap is its earlier name)")
            data = {("simulations" if k == "bootstrap" else k): v for k, v in data.items()}
        return data


class StudyConfig(Section):
    name: str = "study"
    output_dir: str = Field("runs/studies", description="The study's directory is output_dir/name-<hash>.")
    base: Union[str, dict[str, Any]] = Field(..., description="A run config file, or the run config inline.")
    family: FamilyConfig = Field(default_factory=FamilyConfig)
    budgets: list[float] = Field(..., min_length=1)
    points_per_budget: int = Field(5, ge=1)
    spread: float = Field(8.0, gt=1)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    seq_len: int = Field(128, ge=1)
    global_batch_size: int = Field(16, ge=1)
    warmup_tokens_per_param: float = Field(1.0, ge=0, description="Warmup of N tokens (Porian et al. 2024).")
    max_warmup_fraction: float = Field(0.25, ge=0, le=1)
    min_steps: int = Field(50, ge=1, description="Every point trains at least this many optimizer steps.")
    evals_per_point: int = Field(5, ge=1, description="Evaluations along each run (Approach 1 uses them all).")
    checkpoints_per_point: int = Field(
        3, ge=1, description="Checkpoints along each run, each at an evaluation: a study killed mid-point "
        "continues that point from its newest one (1: only at the end).")
    targets: list[float] = Field(..., min_length=1)
    edges: EdgesConfig = Field(default_factory=EdgesConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    fit: FitConfig = Field(default_factory=FitConfig)
    trials: TrialsConfig = Field(default_factory=lambda: TrialsConfig(max_failures=1))

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        if self.prior.law is not None:
            missing = {"E", "A", "B", "alpha", "beta"} - set(self.prior.law)
            if missing:
                raise ValueError(f"prior.law needs E, A, B, alpha and beta; missing {sorted(missing)}")
        return self


class Study:
    """A loaded study: its settings and the base run as a plain dict with absolute paths."""

    def __init__(self, config: StudyConfig, base: dict[str, Any], source: str):
        self.config, self.base, self.source = config, base, source

    @cached_property
    def base_config(self) -> RunConfig:
        """The base run, validated once."""
        return RunConfig.from_dict(self.base)

    def to_dict(self) -> dict[str, Any]:
        return {**self.config.model_dump(mode="json"), "base": self.base}


def load_study(path: str | Path, overrides: list[tuple[str, str]] = ()) -> Study:
    """Read and check a study file; ``overrides`` (``--train.lr 1e-3``) apply to the base run."""
    path = Path(path)
    config = load_file(path, StudyConfig, "study file")
    return Study(config, load_base_run(config.base, path, overrides, "study"), str(path))


