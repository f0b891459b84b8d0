"""Throughput and MFU arithmetic (PaLM, Appendix B)."""

from __future__ import annotations

import pytest

from raylm.train.metrics import measure_peak_flops, mfu
from raylm.train.moe_metrics import moe_metrics


def test_mfu_is_achieved_over_peak():
    assert mfu(flops_per_token=1e6, tokens_per_second=1000, peak_flops_per_device=1e9, devices=2) == 0.5


def test_measured_peak_is_positive_and_plausible():
    peak = measure_peak_flops(size=128, windows=2, seconds=0.02)
    assert 1e7 < peak < 1e14


def test_moe_metrics_name_every_layer_and_expert():
    import torch

    from raylm.model.moe import MoEStats

    stats = MoEStats(aux_loss=torch.tensor(1.5, requires_grad=True), z_loss=torch.tensor(0.25),
                     expert_load=torch.tensor([0.75, 0.25]), dropped_fraction=torch.tensor(0.1))
    metrics = moe_metrics([stats])
    assert metrics["moe/layer0/aux_loss"] == 1.5 and metrics["moe/layer0/expert1_load"] == 0.25
    assert metrics["moe/layer0/dropped_fraction"] == pytest.approx(0.1)
