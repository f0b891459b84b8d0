"""The output projection's narrow-side-first backward gives nn.Linear's gradients, and the models keep its name."""

import pytest
import torch
from torch import nn

from raylm.model.output_projection import NARROW_WIDTH, OutputProjection


@pytest.mark.parametrize("d_model", [6, 8, NARROW_WIDTH, 32])
def test_gradients_match_a_plain_linear(d_model):
    torch.manual_seed(0)
    ours, plain = OutputProjection(d_model, 512), nn.Linear(d_model, 512, bias=False)
    plain.weight.data.copy_(ours.weight.data)
    x = torch.randn(4, 128, d_model)
    grad = torch.randn(4, 128, 512)
    grads = []
    for layer in (ours, plain):
        inputs = x.clone().requires_grad_(True)
        out = layer(inputs)
        out.backward(grad)
        grads.append((out.detach(), inputs.grad, layer.weight.grad))
    for mine, reference in zip(grads[0], grads[1], strict=True):
        assert mine.shape == reference.shape
        # float32 sums of 512 terms in another order: close to the tensor's scale, not bit for bit
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6 * float(reference.abs().max()))


def test_weight_only_and_input_only_gradients():
    torch.manual_seed(0)
    layer = OutputProjection(8, 64)
    x = torch.randn(10, 8, requires_grad=True)
    layer.weight.requires_grad_(False)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is None
    layer.weight.requires_grad_(True)
    frozen = torch.randn(10, 8)
    layer(frozen).sum().backward()
    torch.testing.assert_close(layer.weight.grad, torch.ones(64, 10) @ frozen)


def test_models_keep_the_heads_name_and_tie():
    from raylm.config import ModelConfig
    from raylm.model import build_model

    model = build_model(ModelConfig(arch="gpt", vocab_size=64, max_seq_len=8, d_model=8, n_layers=1, n_heads=1))
    assert isinstance(model.lm_head, OutputProjection)
    assert model.lm_head.weight is model.embed.tokens.weight
    assert "lm_head.weight" in model.state_dict()
    ids = torch.randint(0, 64, (2, 8))
    model(ids, targets=ids).loss.backward()
    assert model.embed.tokens.weight.grad is not None
