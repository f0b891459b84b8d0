"""Shared pieces of the training tests: a tiny run config, the MLflow curve, a plain-PyTorch reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from raylm.config import RunConfig
from raylm.data.loader import TokenLoader
from raylm.model import build_model
from raylm.train.optimizers import build_optimizer, build_scheduler

TINY = {
    "model": {"arch": "gpt", "vocab_size": 512, "max_seq_len": 32, "d_model": 32, "n_layers": 2, "n_heads": 4},
    "data": {"corpus": "stdlib", "max_docs": 80, "val_fraction": 0.1},
    "parallel": {"num_workers": 2, "zero_stage": 0},
    "train": {"lr": 3e-3, "warmup_steps": 1, "max_steps": 4, "micro_batch_size": 2, "global_batch_size": 8,
              "seq_len": 32, "log_every": 1, "eval_every": 100, "eval_batches": 1, "checkpoint_every": 100},
}


def data_parallel_size(cfg: RunConfig) -> int:
    """Replicas that read different data: the workers over the pipeline, tensor and sequence groups."""
    par = cfg.parallel
    return par.num_workers // (par.pp * par.tp * par.sp)


def tiny_config(tmp: Path, **sections) -> RunConfig:
    data = {key: dict(value) for key, value in TINY.items()}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    data["data"]["shards_dir"] = str(tmp / "tokens")
    data["output_dir"] = str(tmp / "runs")
    data["tracking"] = {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "tests"}
    return RunConfig.from_dict(data)


def metric_history(result, metric: str) -> list:
    """Every logged point of ``metric`` in the run's MLflow store, by step."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient(result.tracking_uri).get_metric_history(result.mlflow_run_id, metric)
    return sorted(history, key=lambda m: m.step)


def dataset_dir(result) -> str:
    """The token shards a run trained on (its ``data.directory`` parameter)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(result.tracking_uri).get_run(result.mlflow_run_id).data.params["data.directory"]


def logged_curve(result, metric: str = "train/loss") -> dict[int, float]:
    return {m.step: m.value for m in metric_history(result, metric)}


def reference_losses(cfg: RunConfig, dataset_dir: str, steps: int) -> list[float]:
    """Plain single-process PyTorch on the same global batches: every data-parallel rank's
    micro-batches, the gradient averaged over all of them, clipped, one optimizer step."""
    return reference_training(cfg, dataset_dir, steps).losses


@dataclass
class Reference:
    losses: list[float]                   # the training loss of each step
    weights: list[dict[str, torch.Tensor]]  # the parameters after each step (copies)
    model: torch.nn.Module                # the model after the last step


def reference_training(cfg: RunConfig, dataset_dir: str, steps: int) -> Reference:
    """:func:`reference_losses`, also keeping the weights after every step."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    dp = data_parallel_size(cfg)
    micro = cfg.train.micro_batch_size
    accum = cfg.train.global_batch_size // (micro * dp)
    loaders = [TokenLoader(dataset_dir, "train", batch_size=micro, rank=r, world_size=dp, seed=cfg.data.seed)
               for r in range(dp)]
    losses, weights = [], []
    for _ in range(steps):
        optimizer.zero_grad()
        total = 0.0
        for _ in range(accum):
            for loader in loaders:
                batch = next(loader)
                out = model(batch.inputs, targets=batch.targets)
                (out.loss / (accum * dp)).backward()
                total += out.loss.item()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(total / (accum * dp))
        weights.append({k: p.detach().clone() for k, p in model.named_parameters()})
    return Reference(losses, weights, model)


@torch.no_grad()
def reference_val_loss(cfg: RunConfig, dataset_dir: str, model: torch.nn.Module) -> float:
    """The workers' validation loss of ``model`` (GPT): the validation split's first ``train.eval_batches``
    x ``micro_batch_size`` x dp sequences, shared out over the data-parallel ranks, in order, averaged."""
    dp = data_parallel_size(cfg)
    model.eval()
    losses = []
    for rank in range(dp):
        loader = TokenLoader(dataset_dir, "val", batch_size=cfg.train.micro_batch_size, rank=rank, world_size=dp,
                             seed=cfg.data.seed, shuffle=False,
                             limit=cfg.train.eval_batches * cfg.train.micro_batch_size * dp)
        for _ in range(cfg.train.eval_batches):
            batch = next(loader)
            losses.append(model(batch.inputs, targets=batch.targets).lm_loss.item())
    return sum(losses) / len(losses)
