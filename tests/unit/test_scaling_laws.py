"""C = 6ND, the parametric law and its closed-form compute-optimal allocation (Hoffmann et al. 2022, eq. 4)."""

from __future__ import annotations

import numpy as np
import pytest

from raylm.errors import UserError
from raylm.scaling.laws import (
    BESIROGLU_2024,
    HOFFMANN_2022,
    ChinchillaLaw,
    tokens_for_budget,
    tokens_per_param,
    training_flops,
    training_flops_with_attention,
)

LAWS = [BESIROGLU_2024, HOFFMANN_2022, ChinchillaLaw(E=0.5, A=50.0, B=9000.0, alpha=0.6, beta=0.25)]


def test_flops_tokens_and_ratio():
    assert training_flops(1e9, 2e10) == pytest.approx(1.2e20)
    assert tokens_for_budget(1.2e20, 1e9) == pytest.approx(2e10)
    assert tokens_per_param(1e9, 2e10) == pytest.approx(20.0)
    np.testing.assert_allclose(training_flops([1, 2], [3, 4]), [18, 48])


def test_attention_flops_use_the_counter():
    calls = []

    def per_token(cfg, seq_len):
        calls.append((cfg, seq_len))
        return 7.0

    assert training_flops_with_attention("cfg", 1000, 128, flops_per_token=per_token) == 7000.0
    assert calls == [("cfg", 128)]


def test_log_params_round_trip_and_exponents():
    law = BESIROGLU_2024
    again = ChinchillaLaw.from_log_params(*law.log_params)
    for name in ("E", "A", "B", "alpha", "beta"):
        assert getattr(again, name) == pytest.approx(getattr(law, name), rel=1e-12)
    assert law.a + law.b == pytest.approx(1.0)
    assert law.a == pytest.approx(law.beta / (law.alpha + law.beta))


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("budget", [1e18, 5.76e23, 1e26])
def test_closed_form_optimum_equals_brute_force_along_the_isoflop_line(law, budget):
    n_star, d_star = law.optimal_params(budget), law.optimal_tokens(budget)
    assert 6 * n_star * d_star == pytest.approx(budget, rel=1e-12)
    n = n_star * np.exp(np.linspace(-np.log(1e3), np.log(1e3), 400_001))  # 1000x either side, step 3.5e-5 in ln N
    loss = law.loss(n, tokens_for_budget(budget, n))
    best = int(np.argmin(loss))
    assert 0 < best < n.size - 1, "the minimum must be interior"
    assert n[best] == pytest.approx(n_star, rel=1e-4)
    assert loss[best] == pytest.approx(law.optimal_loss(budget), rel=1e-12)
    assert loss.min() >= law.optimal_loss(budget) - 1e-12


def test_optimum_is_vectorised_and_scales_as_power_laws():
    law = BESIROGLU_2024
    c = np.array([1e20, 1e22])
    n = law.optimal_params(c)
    assert np.log(n[1] / n[0]) / np.log(100) == pytest.approx(law.a)
    d = law.optimal_tokens(c)
    assert np.log(d[1] / d[0]) / np.log(100) == pytest.approx(law.b)
    assert law.optimal_tokens_per_param(c) == pytest.approx(d / n)


def test_tokens_per_parameter_at_the_gopher_budget():
    # Besiroglu et al. (2024): their refit agrees with Chinchilla's ~20 tokens per parameter (70B params,
    # 1.4T tokens at Gopher's 5.76e23 FLOPs), while Hoffmann et al.'s published Approach 3 fit implies
    # several times more.
    assert 15 < BESIROGLU_2024.optimal_tokens_per_param(5.76e23) < 25
    assert HOFFMANN_2022.optimal_tokens_per_param(5.76e23) > 50


def test_invalid_laws_and_budgets_are_user_errors():
    with pytest.raises(UserError, match="A > 0"):
        ChinchillaLaw(E=1.0, A=-1.0, B=1.0, alpha=0.3, beta=0.3)
    with pytest.raises(UserError, match="finite"):
        ChinchillaLaw(E=float("nan"), A=1.0, B=1.0, alpha=0.3, beta=0.3)
    with pytest.raises(UserError, match="alpha > 0 and beta > 0"):
        ChinchillaLaw(E=1.0, A=1.0, B=1.0, alpha=0.0, beta=0.3).optimal_params(1e20)
    with pytest.raises(UserError, match="budget"):
        BESIROGLU_2024.optimal_params(-1.0)
