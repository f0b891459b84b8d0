"""MoE router metrics for logging: per layer, the aux and z losses, dropped fraction and expert load."""

from __future__ import annotations

from raylm.model.moe import MoEStats


def moe_metrics(stats: list[MoEStats]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for layer, s in enumerate(stats):
        prefix = f"moe/layer{layer}"
        metrics[f"{prefix}/aux_loss"] = float(s.aux_loss.detach())
        metrics[f"{prefix}/z_loss"] = float(s.z_loss.detach())
        metrics[f"{prefix}/dropped_fraction"] = float(s.dropped_fraction)
        for expert, load in enumerate(s.expert_load.tolist()):
            metrics[f"{prefix}/expert{expert}_load"] = float(load)
    return metrics
