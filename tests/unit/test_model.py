"""Every architecture with every option: shapes, gradients, masking, exact parameter counts, purity."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from tests.unit.model_cases import ARCHS, OPTIONS, logits_of, loss_of, make_config, option_id

from raylm.model import build_model
from raylm.model.counting import count_params, flops_per_token

CASES = [(arch, option) for arch in ARCHS for option in OPTIONS]


@pytest.mark.parametrize("arch,option", CASES, ids=[f"{a}-{option_id(o)}" for a, o in CASES])
def test_forward_backward_and_count(arch, option):
    torch.manual_seed(0)
    cfg = make_config(arch, **option)
    model = build_model(cfg)
    ids = torch.randint(cfg.vocab_size, (3, 10))
    logits = logits_of(model, arch, ids)
    assert logits.shape == (3, 10, cfg.vocab_size)
    out = loss_of(model, arch, ids)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    counted = count_params(cfg)
    assert counted.total == sum(p.numel() for p in model.parameters())
    if cfg.moe.n_experts:
        assert counted.active < counted.total and len(out.moe_stats) > 0 and out.aux_loss > 0
    else:
        assert counted.active == counted.total and out.aux_loss == 0
    assert flops_per_token(cfg, 10) > 0


@pytest.mark.parametrize("arch", ["gpt", "t5"])
@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "alibi", "none"])
def test_changing_a_future_token_never_changes_earlier_logits(arch, pos):
    torch.manual_seed(1)
    cfg = make_config(arch, pos_encoding=pos)
    model = build_model(cfg).eval()
    ids = torch.randint(cfg.vocab_size, (2, 12))
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1) % cfg.vocab_size
    if arch == "gpt":
        before, after = model(ids), model(changed)
    else:  # the decoder is causal; the encoder input stays the same
        before, after = model(ids, ids), model(ids, changed)
    torch.testing.assert_close(before[:, :7], after[:, :7], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 7:], after[:, 7:])


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_bert_attends_both_ways(pos):
    torch.manual_seed(2)
    cfg = make_config("bert", pos_encoding=pos)
    model = build_model(cfg).eval()
    ids = torch.randint(cfg.vocab_size, (2, 12))
    changed = ids.clone()
    changed[:, 9] = (changed[:, 9] + 1) % cfg.vocab_size
    assert not torch.allclose(model(ids)[:, :9], model(changed)[:, :9])


def test_padding_mask_hides_padded_keys():
    torch.manual_seed(3)
    cfg = make_config("bert")
    model = build_model(cfg).eval()
    ids = torch.randint(cfg.vocab_size, (1, 10))
    mask = torch.ones(1, 10, dtype=torch.long)
    mask[:, 6:] = 0
    other = ids.clone()
    other[:, 6:] = (other[:, 6:] + 3) % cfg.vocab_size
    torch.testing.assert_close(model(ids, attention_mask=mask)[:, :6], model(other, attention_mask=mask)[:, :6])


def test_scaled_init_shrinks_residual_projections():
    torch.manual_seed(4)
    cfg = make_config("gpt", d_model=256, n_layers=8, n_heads=4)
    model = build_model(cfg)
    std = model.blocks[0].attn.o_proj.weight.std().item()
    assert std == pytest.approx(0.02 / (2 * 8) ** 0.5, rel=0.05)
    assert model.blocks[0].attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_tied_embeddings_share_storage():
    model = build_model(make_config("gpt"))
    assert model.lm_head.weight is model.embed.tokens.weight
    untied = build_model(make_config("gpt", tie_embeddings=False))
    assert untied.lm_head.weight is not untied.embed.tokens.weight


def test_sequence_longer_than_positions_is_an_error():
    model = build_model(make_config("gpt"))
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        model(torch.zeros(1, 30, dtype=torch.long))


def test_model_package_imports_no_distributed_code():
    """model/ is pure torch: no ray, deepspeed or torch.distributed (moe.py's all-to-all excepted)."""
    package = Path(__file__).resolve().parents[2] / "platform" / "raylm" / "model"
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        for name in names:
            assert name.split(".")[0] not in ("ray", "deepspeed"), f"{path.name} imports {name}"
            if path.name != "moe.py":
                assert not name.startswith("torch.distributed"), f"{path.name} imports {name}"


def test_flops_per_token_follows_chinchilla_appendix_f():
    """Hand count for one small config (Hoffmann et al. 2022, Table 4), forward x 3."""
    from raylm.model.counting import matmul_flops_per_token

    cfg = make_config("gpt", vocab_size=100, d_model=16, n_layers=2, n_heads=2, d_ff=64, max_seq_len=8)
    seq, d, v = 8, 16, 100
    attention = 2 * seq * d * 3 * d + 2 * seq * seq * d + 3 * 2 * seq * seq + 2 * seq * seq * d + 2 * seq * d * d
    dense = 2 * seq * 2 * d * 64
    forward = 2 * seq * v * d + 2 * (attention + dense) + 2 * seq * d * v
    assert flops_per_token(cfg, seq) == pytest.approx(3 * forward / seq)
    assert matmul_flops_per_token(cfg, seq) == pytest.approx(3 * (forward - 2 * seq * v * d) / seq)
