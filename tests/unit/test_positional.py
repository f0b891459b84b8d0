"""Positional encodings against their papers' formulas."""

from __future__ import annotations

import math

import torch

from raylm.model.positional import alibi_bias, alibi_slopes, apply_rope, rope_angles, sinusoidal_table


def test_sinusoidal_table_matches_formula():
    table = sinusoidal_table(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert math.isclose(table[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(table[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(m: int, n: int) -> float:
        qm = apply_rope(q, *rope_angles(torch.tensor([m]), 16))
        kn = apply_rope(k, *rope_angles(torch.tensor([n]), 16))
        return (qm * kn).sum().item()

    assert math.isclose(score(5, 2), score(103, 100), rel_tol=1e-4)
    assert math.isclose(score(0, 0), score(40, 40), rel_tol=1e-4)
    assert not math.isclose(score(5, 2), score(5, 4), rel_tol=1e-3)


def test_rope_preserves_norm():
    x = torch.randn(2, 3, 5, 8)
    rotated = apply_rope(x, *rope_angles(torch.arange(5), 8))
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))


def test_alibi_slopes_as_in_the_paper():
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    assert torch.allclose(alibi_slopes(4), torch.tensor([2.0 ** -(2 * (i + 1)) for i in range(4)]))
    # 12 heads: the 8-head slopes, then every other slope of the 16-head sequence.
    expected = [2.0 ** -(i + 1) for i in range(8)] + [2.0 ** -(0.5 * (2 * i + 1)) for i in range(4)]
    assert torch.allclose(alibi_slopes(12), torch.tensor(expected))


def test_alibi_bias_is_linear_in_distance():
    slopes = alibi_slopes(2)
    bias = alibi_bias(slopes, torch.arange(4), torch.arange(4), causal=True)
    assert bias[0, 3, 0].item() == -slopes[0].item() * 3
    assert bias[1, 2, 2].item() == 0
    symmetric = alibi_bias(slopes, torch.arange(4), torch.arange(4), causal=False)
    assert symmetric[0, 0, 3] == symmetric[0, 3, 0]
