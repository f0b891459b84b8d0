"""Compute, the parametric loss law and its compute-optimal allocation.

Numbers in, numbers out. References:

- Kaplan et al. (2020), "Scaling Laws for Neural Language Models", section 2.1: C ~ 6ND.
- Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models" (Chinchilla):
  eq. (2) the law L(N, D) = E + A/N^alpha + B/D^beta, eq. (4) its minimum along C = 6ND,
  Appendix F the attention-inclusive FLOP count.
- Besiroglu et al. (2024), "Chinchilla Scaling: A replication attempt", the refit used as
  :data:`BESIROGLU_2024`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from raylm.errors import UserError

FLOPS_PER_PARAM_TOKEN = 6.0  # forward 2ND + backward 4ND (Kaplan et al. 2020, section 2.1)


def training_flops(n_params: Any, n_tokens: Any) -> Any:
    """Training compute C = 6 N D (Kaplan et al. 2020; Hoffmann et al. 2022, section 3)."""
    return FLOPS_PER_PARAM_TOKEN * np.asarray(n_params, dtype=float) * np.asarray(n_tokens, dtype=float)


def tokens_for_budget(budget: Any, n_params: Any) -> Any:
    """Tokens D = C / (6 N) that spend the budget C on a model of N parameters."""
    return np.asarray(budget, dtype=float) / (FLOPS_PER_PARAM_TOKEN * np.asarray(n_params, dtype=float))


def tokens_per_param(n_params: Any, n_tokens: Any) -> Any:
    """D / N; about 20 at the Chinchilla optimum (Hoffmann et al. 2022, Table 3)."""
    return np.asarray(n_tokens, dtype=float) / np.asarray(n_params, dtype=float)


def training_flops_with_attention(
    model_cfg: Any, n_tokens: float, seq_len: int, flops_per_token: Callable[[Any, int], float]
) -> float:
    """Training FLOPs counting attention (Hoffmann et al. 2022, Appendix F): per-token FLOPs x tokens.

    ``flops_per_token(model_cfg, seq_len)``: the model room's :func:`raylm.model.counting.flops_per_token`.
    """
    return float(flops_per_token(model_cfg, seq_len)) * float(n_tokens)


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2).

    E is the entropy of text, A/N^alpha the cost of a finite model, B/D^beta of finite data.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        values = asdict(self)
        bad = {k: v for k, v in values.items() if not np.isfinite(v)}
        if bad:
            raise UserError(f"scaling law parameters must be finite, got {bad}")
        if self.A <= 0 or self.B <= 0 or self.E < 0:
            raise UserError(f"scaling law needs A > 0, B > 0, E >= 0, got A={self.A}, B={self.B}, E={self.E}")

    @classmethod
    def from_log_params(cls, a: float, b: float, e: float, alpha: float, beta: float) -> ChinchillaLaw:
        """From the fit's parameterisation A = exp(a), B = exp(b), E = exp(e) (Besiroglu et al. 2024)."""
        return cls(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=float(alpha), beta=float(beta))

    @property
    def log_params(self) -> np.ndarray:
        """(a, b, e, alpha, beta) = (log A, log B, log E, alpha, beta), the order the fit uses."""
        return np.array([np.log(self.A), np.log(self.B), np.log(self.E), self.alpha, self.beta])

    @property
    def a(self) -> float:
        """Exponent of N* ~ C^a: a = beta / (alpha + beta) (Hoffmann et al. 2022, eq. 4)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D* ~ C^b: b = alpha / (alpha + beta) (Hoffmann et al. 2022, eq. 4)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def frontier_exponent(self) -> float:
        """gamma of the optimum's L*(C) = E + K C^-gamma: gamma = alpha beta / (alpha + beta) (Hoffmann et al. 2022,
        eq. 4 substituted into eq. 2)."""
        return self.alpha * self.beta / (self.alpha + self.beta)

    def loss(self, n_params: Any, n_tokens: Any) -> Any:
        """The predicted loss L(N, D)."""
        n = np.asarray(n_params, dtype=float)
        d = np.asarray(n_tokens, dtype=float)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def optimal_params(self, budget: Any) -> Any:
        """N*(C) = G (C/6)^a with G = (alpha A / (beta B))^(1/(alpha+beta)) (Hoffmann et al. 2022, eq. 4)."""
        self._check_allocation()
        c = _positive(budget, "budget")
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        return g * (c / FLOPS_PER_PARAM_TOKEN) ** self.a

    def optimal_tokens(self, budget: Any) -> Any:
        """D*(C) = (C/6) / N*(C) = G^-1 (C/6)^b (Hoffmann et al. 2022, eq. 4)."""
        c = _positive(budget, "budget")
        return c / FLOPS_PER_PARAM_TOKEN / self.optimal_params(c)

    def optimal_loss(self, budget: Any) -> Any:
        """L(N*(C), D*(C)), the lowest loss the law allows for compute C."""
        return self.loss(self.optimal_params(budget), self.optimal_tokens(budget))

    def optimal_tokens_per_param(self, budget: Any) -> Any:
        """D*/N* at compute C (about 20 for Chinchilla; it drifts with C unless alpha == beta)."""
        return self.optimal_tokens(budget) / self.optimal_params(budget)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "a": self.a, "b": self.b}

    def _check_allocation(self) -> None:
        if self.alpha <= 0 or self.beta <= 0:
            raise UserError(
                f"the compute-optimal allocation needs alpha > 0 and beta > 0, got alpha={self.alpha:.4g}, "
                f"beta={self.beta:.4g}; the fitted law does not describe a trade-off between N and D"
            )


def _positive(values: Any, name: str) -> np.ndarray | float:
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise UserError(f"{name} must be positive and finite, got {values!r}")
    return arr if arr.ndim else float(arr)


#: Hoffmann et al. (2022), the Approach 3 fit as published (section 3.3, Appendix D.2).
HOFFMANN_2022 = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
#: Besiroglu et al. (2024), their refit of the Chinchilla data (section 3).
BESIROGLU_2024 = ChinchillaLaw(E=1.82, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
