"""IsoFLOP grids: for each compute budget, k model shapes around a prior optimum, as plain configs.

Hoffmann et al. (2022), section 3.2 (Approach 2) and Appendix D: every (N, C) point is its own
run, trained for D = C / (6N) tokens with a cosine schedule exactly that long. Shapes follow a
model family rule (width = aspect ratio x depth, fixed head size, fixed vocabulary), and N counts
every parameter, embeddings and output head included (Chinchilla; Porian et al. 2024).

Warmup scales with model size: ``warmup_tokens_per_param`` x N tokens (Porian et al. 2024,
"Resolving Discrepancies in Compute-Optimal Scaling of Language Models", use N tokens),
capped at ``max_warmup_fraction`` of the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from raylm.errors import UserError
from raylm.scaling.laws import ChinchillaLaw, tokens_for_budget, training_flops

CountParams = Callable[[Any], Any]  # ModelConfig -> ParamCount (with .total) or int
FlopsPerToken = Callable[[Any, int], float]


@dataclass(frozen=True)
class ModelFamily:
    """How shape follows size: d_model ~ aspect_ratio x n_layers, n_heads = d_model / head_dim.

    ``base`` holds the other ModelConfig fields (vocab_size, activation, ...); derived fields such as
    d_ff are left for ModelConfig to derive from each d_model. ``aspect_tolerance`` lets the width
    deviate by that factor from the rule so sizes can be hit closely.
    """

    base: dict = field(default_factory=dict)
    aspect_ratio: float = 64.0
    head_dim: int = 64
    max_layers: int = 96
    aspect_tolerance: float = 1.5

    def __post_init__(self) -> None:
        if self.aspect_ratio <= 0 or self.head_dim < 1 or self.max_layers < 1 or self.aspect_tolerance < 1:
            raise UserError(f"invalid model family: {self}")
        clash = {"d_model", "n_layers", "n_heads", "d_ff"} & set(self.base)
        if clash:
            raise UserError(f"the model family sets {sorted(clash)} itself; remove them from its base config")


@dataclass(frozen=True)
class GridPoint:
    """One run of the grid: its budget, model config (plain dict), size, tokens, steps and warmup."""

    budget: float
    model: dict
    params: int
    tokens: int
    steps: int
    warmup: int
    seq_len: int
    global_batch_size: int
    flops: float  # 6 N D with the tokens actually trained
    flops_attention: float | None  # Hoffmann et al. (2022), Appendix F, when a FLOP counter is available

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainingShape:
    """How every point trains: sequence length, tokens per step (in sequences), warmup of
    ``warmup_tokens_per_param`` tokens per parameter capped at ``max_warmup_fraction`` of the steps."""

    seq_len: int = 256
    global_batch_size: int = 64
    warmup_tokens_per_param: float = 1.0
    max_warmup_fraction: float = 0.25


def isoflop_grid(
    budgets,
    family: ModelFamily,
    *,
    k: int = 5,
    spread: float = 8.0,
    prior: ChinchillaLaw | Callable[[float], float] | None = None,
    shape: TrainingShape = TrainingShape(),
    count_params: CountParams | None = None,
    flops_per_token: FlopsPerToken | None = None,
) -> list[GridPoint]:
    """k shapes per budget, log-spaced over a ``spread``-fold range of N centred on the prior optimum,
    each trained as ``shape`` says (:class:`TrainingShape`).

    ``prior``: a law (its N*(C)), a function C -> N*, or None for 20 tokens per parameter
    (Hoffmann et al. 2022, Table 3). ``count_params(model_config)`` counts a shape's parameters (the
    model room's :func:`raylm.model.counting.count_params`; this module stays free of torch), and
    ``flops_per_token(model_config, seq_len)``, when given, its attention-inclusive FLOPs.
    """
    if count_params is None:
        raise UserError("isoflop_grid needs count_params (e.g. raylm.model.counting.count_params)")
    seq_len, global_batch_size = shape.seq_len, shape.global_batch_size
    warmup_tokens_per_param, max_warmup_fraction = shape.warmup_tokens_per_param, shape.max_warmup_fraction
    _check_grid_args(budgets, k, spread, seq_len, global_batch_size)
    optimum = _prior_fn(prior)
    targets = {c: optimum(c) * np.exp(np.linspace(-0.5, 0.5, k) * np.log(spread)) for c in map(float, budgets)}
    all_targets = np.concatenate(list(targets.values()))
    shapes = _candidate_shapes(family, count_params, all_targets.min(), all_targets.max(), seq_len)
    points = []
    for budget, wanted in targets.items():
        for cfg, n in _pick(shapes, wanted, family.aspect_ratio):
            points.append(_point(budget, cfg, n, seq_len, global_batch_size, warmup_tokens_per_param,
                                 max_warmup_fraction, flops_per_token))
    return points


def _prior_fn(prior) -> Callable[[float], float]:
    if prior is None:
        return lambda c: math.sqrt(c / (6.0 * 20.0))  # D = 20 N and C = 6 N D
    if isinstance(prior, ChinchillaLaw):
        return lambda c: float(prior.optimal_params(c))
    if callable(prior):
        return lambda c: float(prior(c))
    raise UserError(f"prior must be a ChinchillaLaw, a function C -> N or None, got {type(prior).__name__}")


def _candidate_shapes(family: ModelFamily, count_params: CountParams, n_lo: float, n_hi: float, seq_len: int):
    """(config, N, aspect) for every depth and head-multiple width near the family's aspect ratio."""
    from raylm.config import ModelConfig

    base = {"max_seq_len": seq_len, **family.base}
    if base["max_seq_len"] < seq_len:
        raise UserError(f"the family's max_seq_len ({base['max_seq_len']}) is below the training seq_len ({seq_len})")
    vocab = int(base.get("vocab_size", ModelConfig.model_fields["vocab_size"].default))
    shapes = []
    for layers in range(1, family.max_layers + 1):
        lo = max(1, math.floor(family.aspect_ratio * layers / family.aspect_tolerance / family.head_dim))
        hi = max(1, math.ceil(family.aspect_ratio * layers * family.aspect_tolerance / family.head_dim))
        for heads in range(lo, hi + 1):
            d = heads * family.head_dim
            rough = 12 * layers * d * d + vocab * d  # Kaplan et al. (2020), eq. 2.1, plus embeddings
            if not n_lo / 4 <= rough <= n_hi * 4:
                continue
            try:
                cfg = ModelConfig(**{**base, "d_model": d, "n_layers": layers, "n_heads": heads})
            except ValueError as exc:
                raise UserError(
                    f"model family gives an invalid config at d_model={d}, n_layers={layers}: {exc}"
                ) from None
            total = count_params(cfg)
            shapes.append((cfg, int(getattr(total, "total", total)), d / layers))
    if not shapes:
        raise UserError(f"no model of the family has between {n_lo / 4:.3g} and {n_hi * 4:.3g} parameters; "
                        "change the budgets, max_layers or head_dim")
    return shapes


def _pick(shapes, wanted: np.ndarray, aspect: float):
    """For each target size the closest unused shape (ties broken towards the preferred aspect ratio)."""
    log_n = np.log([n for _, n, _ in shapes])
    penalty = 0.05 * np.abs(np.log(np.array([r for _, _, r in shapes]) / aspect))
    used: set[int] = set()
    picked = []
    for target in wanted:
        score = np.abs(log_n - np.log(target)) + penalty
        score[list(used)] = np.inf
        best = int(np.argmin(score))
        if not np.isfinite(score[best]):
            break
        used.add(best)
        picked.append((shapes[best][0], shapes[best][1]))
    return sorted(picked, key=lambda item: item[1])


NARROW_MIN_WIDTH = 4  # the narrowest one-head model below a family's smallest shape (see narrow_shapes)


def narrow_shapes(family: ModelFamily, count_params: CountParams, seq_len: int):
    """(config, N, aspect) of the models below the family's smallest shape: one layer, one head as wide as
    the model, every even d_model below ``head_dim`` down to NARROW_MIN_WIDTH, the rest (d_ff, norms, ...)
    from ``base`` as for the family's own shapes.

    The family's smallest shape has one layer (one head of ``head_dim`` when ``aspect_ratio /
    aspect_tolerance`` is below twice ``head_dim``, as in the demo's 8-wide one); depth cannot shrink below
    one layer, so a smaller model can only be narrower, and below ``head_dim`` its one head is narrower
    than the family's. Even widths, so that every position encoding takes them (RoPE rotates pairs of a
    head's dimensions); at least 4 wide: two rotary pairs and a 4-wide residual stream, where the model is
    already mostly its embedding table (vocab x d_model: 91% of N with a 512-token vocabulary) and halving
    the width once more would leave each token two numbers. Widths the model config refuses (a base with
    n_kv_heads > 1) are left out."""
    from raylm.config import ModelConfig

    base = {"max_seq_len": seq_len, **family.base}
    shapes = []
    for d in range(NARROW_MIN_WIDTH, family.head_dim, 2):
        try:
            cfg = ModelConfig(**{**base, "d_model": d, "n_layers": 1, "n_heads": 1})
        except ValueError:
            continue
        total = count_params(cfg)
        shapes.append((cfg, int(getattr(total, "total", total)), float(d)))
    return shapes


def family_model_beyond(family: ModelFamily, edge: float, target: float, *, seq_len: int,
                        count_params: CountParams):
    """The family's model closest to ``target``, picked as :func:`isoflop_grid` picks (nearest in log N, ties
    towards the aspect ratio), among its models strictly smaller than ``edge`` when ``target < edge`` and
    strictly larger otherwise: ``(model config, N)``, or None when there is none on that side (nothing above
    its largest shape within ``max_layers``; nothing below its smallest shape nor among its one-head models
    narrower than ``head_dim``, :func:`narrow_shapes`, which are used only where the family's own shapes have
    nothing smaller than ``edge``)."""
    smaller = target < edge
    low, high = (1.0, float(edge)) if smaller else (float(edge), math.inf)
    shapes = [s for s in _candidate_shapes(family, count_params, low, high, seq_len)
              if (s[1] < edge if smaller else s[1] > edge)]
    if not shapes and smaller:
        shapes = [s for s in narrow_shapes(family, count_params, seq_len) if s[1] < edge]
    if not shapes:
        return None
    ((cfg, n),) = _pick(shapes, np.array([float(target)]), family.aspect_ratio)
    return cfg, n


def point_steps(budget: float, params: int, shape: TrainingShape) -> int:
    """Optimizer steps of an N-parameter model at ``budget``: D = C / (6N) in whole steps of ``shape``."""
    return int(round(float(tokens_for_budget(budget, params)) / (shape.global_batch_size * shape.seq_len)))


def sized_point(budget: float, model, params: int, shape: TrainingShape,
                flops_per_token: FlopsPerToken | None = None) -> GridPoint:
    """One model config trained at ``budget`` exactly as :func:`isoflop_grid` trains its points."""
    return _point(budget, model, params, shape.seq_len, shape.global_batch_size, shape.warmup_tokens_per_param,
                  shape.max_warmup_fraction, flops_per_token)


def _point(budget, cfg, n, seq_len, batch, warmup_per_param, max_warmup_fraction, flops_per_token) -> GridPoint:
    tokens_per_step = batch * seq_len
    steps = point_steps(budget, n, TrainingShape(seq_len, batch))
    if steps < 1:
        raise UserError(f"budget {budget:.3g} FLOPs is less than one step ({tokens_per_step} tokens) of a "
                        f"{n:,}-parameter model; raise the budget or lower the batch size")
    warmup = int(round(warmup_per_param * n / tokens_per_step))
    warmup = max(0, min(warmup, int(max_warmup_fraction * steps)))
    tokens = steps * tokens_per_step
    attention = float(flops_per_token(cfg, seq_len)) * tokens if flops_per_token is not None else None
    model = cfg.model_dump(mode="json")
    return GridPoint(budget=budget, model=model, params=n, tokens=tokens, steps=steps, warmup=warmup,
                     seq_len=seq_len, global_batch_size=batch, flops=float(training_flops(n, tokens)),
                     flops_attention=attention)


def _check_grid_args(budgets, k: int, spread: float, seq_len: int, batch: int) -> None:
    values = list(budgets)
    if not values or not all(np.isfinite(c) and c > 0 for c in values):
        raise UserError(f"budgets must be positive FLOP counts, got {values}")
    if k < 1 or spread < 1:
        raise UserError(f"need k >= 1 shapes per budget and spread >= 1, got k={k}, spread={spread}")
    if seq_len < 1 or batch < 1:
        raise UserError(f"seq_len and global_batch_size must be >= 1, got {seq_len}, {batch}")
