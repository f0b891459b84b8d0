"""IsoFLOP grids: k shapes per budget around a prior optimum, with exact parameter counts and schedules."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from raylm.errors import UserError
from raylm.scaling.isoflop import ModelFamily, TrainingShape, isoflop_grid
from raylm.scaling.laws import BESIROGLU_2024

VOCAB = 8192


@dataclass
class Count:
    total: int


def standin_count(cfg) -> Count:
    """12 L d^2 (attention + 4x MLP) plus tied embeddings: Kaplan et al. (2020) style."""
    return Count(12 * cfg.n_layers * cfg.d_model**2 + cfg.vocab_size * cfg.d_model)


FAMILY = ModelFamily(base={"vocab_size": VOCAB}, aspect_ratio=64, head_dim=64)


def test_grid_has_k_shapes_per_budget_around_the_prior():
    budgets = [1e17, 1e18, 1e19]
    points = isoflop_grid(budgets, FAMILY, k=5, spread=8.0, shape=TrainingShape(seq_len=256, global_batch_size=32),
                          count_params=standin_count)
    assert len(points) == 15
    for budget in budgets:
        mine = [p for p in points if p.budget == budget]
        sizes = [p.params for p in mine]
        assert sizes == sorted(sizes) and len(set(sizes)) == 5
        centre = np.sqrt(budget / 120)  # 20 tokens per parameter
        assert sizes[0] < centre < sizes[-1]
        assert sizes[-1] / sizes[0] == pytest.approx(8.0, rel=0.5)
        for p in mine:
            model = p.model
            assert p.params == standin_count(_Cfg(model)).total
            assert model["d_model"] == model["n_heads"] * 64
            assert 64 / 1.5 <= model["d_model"] / model["n_layers"] <= 64 * 1.5
            assert p.tokens == p.steps * 32 * 256
            assert p.flops == pytest.approx(6 * p.params * p.tokens)
            assert abs(p.flops - budget) <= 6 * p.params * 32 * 256 / 2 + 1  # within half a step of the budget
            assert 0 <= p.warmup <= 0.25 * p.steps
            assert p.warmup == min(round(p.params / (32 * 256)), int(0.25 * p.steps))
            assert p.flops_attention is None


def test_prior_law_centres_the_grid():
    points = isoflop_grid([1e19], FAMILY, k=3, spread=4.0, prior=BESIROGLU_2024, count_params=standin_count)
    middle = points[1].params
    assert middle == pytest.approx(BESIROGLU_2024.optimal_params(1e19), rel=0.25)


def test_points_are_plain_data():
    point = isoflop_grid([1e18], FAMILY, k=2, count_params=standin_count)[0]
    out = point.as_dict()
    assert set(out) >= {"budget", "model", "params", "tokens", "steps", "warmup"}
    assert isinstance(out["model"], dict) and out["model"]["vocab_size"] == VOCAB


def test_bad_grids_are_user_errors():
    with pytest.raises(UserError, match="budgets"):
        isoflop_grid([], FAMILY, count_params=standin_count)
    with pytest.raises(UserError, match="less than one step"):
        isoflop_grid([1e13], FAMILY, k=2, shape=TrainingShape(seq_len=2048, global_batch_size=4096),
                     count_params=standin_count)
    with pytest.raises(UserError, match="no model of the family"):
        isoflop_grid([1e6], FAMILY, k=2, count_params=standin_count)
    with pytest.raises(UserError, match="sets"):
        ModelFamily(base={"d_model": 128})


def test_real_parameter_counts():
    counting = pytest.importorskip("raylm.model.counting")
    from raylm.config import ModelConfig

    points = isoflop_grid([3e16, 3e17], ModelFamily(base={"vocab_size": 4096}, head_dim=32, aspect_ratio=32), k=3,
                          shape=TrainingShape(seq_len=128, global_batch_size=16), count_params=counting.count_params,
                          flops_per_token=counting.flops_per_token)
    for p in points:
        cfg = ModelConfig(**p.model)
        assert p.params == counting.count_params(cfg).total
        assert p.flops_attention == pytest.approx(counting.flops_per_token(cfg, 128) * p.tokens)
        assert p.flops_attention > p.flops * 0.9  # attention adds FLOPs on top of 6ND (give or take embeddings)


class _Cfg:
    def __init__(self, model: dict):
        self.__dict__.update(model)
