"""Switch MoE layer: capacity drops, top-2 priority, losses, reference equality, gradients, jitter, counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raylm.model.feedforward import ACTIVATIONS
from raylm.model.moe import MoEStats, SwitchMoE, expert_capacity, moe_params


def _layer(d_model=4, n_experts=2, top_k=1, seed=0, **kwargs) -> SwitchMoE:
    torch.manual_seed(seed)
    return SwitchMoE(d_model, 8, n_experts, top_k=top_k, **kwargs)


def _naive(layer: SwitchMoE, x: torch.Tensor) -> torch.Tensor:
    """Token-by-token dense reference without capacity: softmax, pick, (renormalise), weighted sum."""
    rows = []
    for token in x.reshape(-1, x.shape[-1]):
        probs = torch.softmax(token.float() @ layer.router.weight.float().t(), dim=-1)
        picked = sorted(range(layer.n_experts), key=lambda e: (-probs[e].item(), e))[: layer.top_k]
        norm = 1.0 if layer.top_k == 1 else sum(probs[e] for e in picked)
        rows.append(sum(probs[e] / norm * layer.experts[e](token) for e in picked))
    return torch.stack(rows).view_as(x)


def test_capacity_drops_exactly_the_overflow_top1():
    layer = _layer(d_model=4, n_experts=2, capacity_factor=0.5)  # capacity ceil(0.5 * 6 / 2) = 2
    with torch.no_grad():
        layer.router.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    x = torch.rand(1, 6, 4) + 0.1  # positive: every token's logit for expert 0 is larger
    layer.train()
    out, stats = layer(x)
    tokens = x[0]
    gate = torch.softmax(tokens @ layer.router.weight.t(), -1)[:, 0:1]
    torch.testing.assert_close(out[0, :2], gate[:2] * layer.experts[0](tokens[:2]))
    assert torch.equal(out[0, 2:], torch.zeros(4, 4))
    assert stats.dropped_fraction.item() == pytest.approx(4 / 6)
    assert stats.expert_load.tolist() == [1.0, 0.0]


def test_top2_first_choices_take_priority_over_second_choices():
    # router = identity, so each token's logits are the token itself
    x = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 2.0, 1.0], [2.0, 0.0, 1.0]]])
    layer = _layer(d_model=3, n_experts=3, top_k=2, capacity_factor=0.75)  # ceil(0.75 * 4 * 2 / 3) = 2
    with torch.no_grad():
        layer.router.weight.copy_(torch.eye(3))
    out, stats = layer(x)
    # first choices 0,1,1,0; second choices 1,2,2,2. Expert 1 holds tokens 1 and 2 (first choices),
    # so token 0's second choice is dropped although it comes first by position; expert 2 keeps
    # tokens 1 and 2 and drops token 3.
    t, p = x[0], torch.softmax(x[0], -1)
    e = [layer.experts[i](t) for i in range(3)]
    expected = torch.stack(
        [
            p[0, 0] / (p[0, 0] + p[0, 1]) * e[0][0],
            (p[1, 1] * e[1][1] + p[1, 2] * e[2][1]) / (p[1, 1] + p[1, 2]),
            (p[2, 1] * e[1][2] + p[2, 2] * e[2][2]) / (p[2, 1] + p[2, 2]),
            p[3, 0] / (p[3, 0] + p[3, 2]) * e[0][3],
        ]
    )
    torch.testing.assert_close(out[0], expected)
    assert stats.dropped_fraction.item() == pytest.approx(2 / 8)
    torch.testing.assert_close(stats.expert_load, torch.tensor([2.0, 3.0, 3.0]) / 8)


def test_top2_all_to_one_expert_keeps_capacity_worth_of_first_choices():
    layer = _layer(d_model=4, n_experts=3, top_k=2, capacity_factor=0.75)  # ceil(0.75 * 4 * 2 / 3) = 2
    with torch.no_grad():
        layer.router.weight.copy_(torch.tensor([[2.0] * 4, [1.0] * 4, [0.0] * 4]))
    x = torch.rand(1, 4, 4) + 0.1
    out, stats = layer(x)
    t = x[0]
    p = torch.softmax(t @ layer.router.weight.t(), -1)
    pair = p[:2, 0:1] + p[:2, 1:2]
    expected = (p[:2, 0:1] * layer.experts[0](t[:2]) + p[:2, 1:2] * layer.experts[1](t[:2])) / pair
    torch.testing.assert_close(out[0, :2], expected)
    assert torch.equal(out[0, 2:], torch.zeros(2, 4))
    assert stats.dropped_fraction.item() == pytest.approx(4 / 8)


def test_losses_match_hand_computation():
    layer = _layer(d_model=5, n_experts=4, top_k=2, seed=3)
    x = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(1))
    _, stats = layer(x)
    logits = x.reshape(-1, 5).double().numpy() @ layer.router.weight.detach().double().numpy().T
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    f = np.bincount(probs.argmax(1), minlength=4) / len(probs)
    assert stats.aux_loss.item() == pytest.approx(4 * float(np.sum(f * probs.mean(0))), rel=1e-5)
    lse = logits.max(1) + np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))
    assert stats.z_loss.item() == pytest.approx(float(np.mean(lse**2)), rel=1e-5)
    assert stats.expert_load.sum().item() == pytest.approx(1.0)
    assert not stats.expert_load.requires_grad and not stats.dropped_fraction.requires_grad


def test_uniform_router_gives_aux_one_and_z_log_n_squared():
    layer = _layer(d_model=4, n_experts=4)
    with torch.no_grad():
        layer.router.weight.zero_()
    _, stats = layer(torch.randn(3, 5, 4))
    assert stats.aux_loss.item() == pytest.approx(1.0)
    assert stats.z_loss.item() == pytest.approx(math.log(4) ** 2)


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_matches_naive_reference_and_gradients_flow(top_k, activation):
    n_experts = 4
    layer = _layer(
        d_model=6, n_experts=n_experts, top_k=top_k, activation=activation, capacity_factor=n_experts / top_k
    )  # capacity = all tokens: nothing dropped
    x = torch.randn(3, 5, 6, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, stats = layer(x)
    assert out.shape == x.shape and isinstance(stats, MoEStats)
    assert stats.dropped_fraction.item() == 0.0
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    ref = _naive(layer, x_ref)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    (ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    for name, p in layer.named_parameters():
        ref_grad = torch.zeros_like(p) if p.grad is None else p.grad  # naive never calls unused experts
        torch.testing.assert_close(grads[name], ref_grad, rtol=1e-5, atol=1e-6, msg=name)
    assert grads["router.weight"].abs().sum() > 0  # through the gate probabilities
    used = stats.expert_load > 0
    for e in range(n_experts):
        assert (grads[f"experts.{e}.w_out.weight"].abs().sum() > 0) == bool(used[e])


def test_aux_and_z_loss_send_gradient_to_router():
    layer = _layer(d_model=4, n_experts=4)
    _, stats = layer(torch.randn(2, 6, 4))
    (stats.aux_loss + stats.z_loss).backward()
    assert layer.router.weight.grad.abs().sum() > 0


def test_eval_and_train_capacity_factors_are_honoured():
    layer = _layer(d_model=4, n_experts=2, capacity_factor=0.5, eval_capacity_factor=1.0)
    with torch.no_grad():
        layer.router.weight.copy_(torch.tensor([[1.0] * 4, [0.0] * 4]))
    x = torch.rand(1, 8, 4) + 0.1  # all to expert 0
    _, train_stats = layer.train()(x)  # capacity ceil(0.5 * 8 / 2) = 2
    out, eval_stats = layer.eval()(x)  # capacity ceil(1.0 * 8 / 2) = 4
    assert train_stats.dropped_fraction.item() == pytest.approx(6 / 8)
    assert eval_stats.dropped_fraction.item() == pytest.approx(4 / 8)
    assert out[0, :4].abs().sum() > 0 and torch.equal(out[0, 4:], torch.zeros(4, 4))


def test_capacity_formula():
    assert expert_capacity(8, 4, 1, 1.25) == 3  # ceil(2.5)
    assert expert_capacity(8, 4, 2, 1.0) == 4
    assert expert_capacity(10, 1, 1, 1.1) == 11  # not 12 from 11.000000000000002


def test_jitter_only_in_training():
    x = torch.randn(2, 6, 4)
    plain, jittery = _layer(n_experts=4, seed=5), _layer(n_experts=4, seed=5, router_jitter=0.3)
    plain.eval(), jittery.eval()
    out_plain, stats_plain = plain(x)
    out_jit, stats_jit = jittery(x)
    assert torch.equal(out_plain, out_jit) and torch.equal(stats_plain.z_loss, stats_jit.z_loss)
    jittery.train(), plain.train()
    z = {jittery(x)[1].z_loss.item() for _ in range(3)}
    assert len(z) == 3  # fresh noise every call
    assert plain(x)[1].z_loss.item() == stats_plain.z_loss.item()


def test_jitter_touches_the_router_input_only():
    layer = _layer(n_experts=1, router_jitter=0.5, capacity_factor=1.0).train()
    x = torch.randn(2, 3, 4)
    out, _ = layer(x)  # one expert: gate probability 1 whatever the noise
    torch.testing.assert_close(out, layer.experts[0](x))


def test_forward_is_deterministic():
    layer = _layer(d_model=8, n_experts=4, top_k=2, capacity_factor=0.6)
    x = torch.randn(4, 9, 8)
    a, sa = layer(x)
    b, sb = layer(x)
    assert torch.equal(a, b) and torch.equal(sa.expert_load, sb.expert_load)
    assert 0 < sa.dropped_fraction.item() < 1


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_moe_params_counts_every_parameter(activation, bias):
    layer = SwitchMoE(12, 20, 3, activation=activation, bias=bias)
    assert moe_params(12, 20, 3, activation, bias) == sum(p.numel() for p in layer.parameters())


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="top_k"):
        SwitchMoE(4, 8, 1, top_k=2)
    with pytest.raises(ValueError, match="capacity"):
        SwitchMoE(4, 8, 2, capacity_factor=0.0)
