"""The training loop each Ray Train worker runs: ``train_loop_per_worker(config)``.

Everything arrives in ``config`` (a plain dict): ``run`` is the :class:`RunConfig` and
``runtime`` what the driver prepared (dataset directory, special token ids, MLflow run,
storage directory). Each optimizer step runs ``grad_accum`` micro-batches through the
DeepSpeed engine; rank 0 logs metrics; all ranks evaluate, checkpoint and report together.
"""

from __future__ import annotations

import contextlib
import math
import os
import time

import torch
import torch.distributed as dist

from raylm import storage
from raylm.config import RunConfig
from raylm.data.loader import TokenLoader
from raylm.data.tokenizer import SpecialTokens
from raylm.model.counting import matmul_flops_per_token
from raylm.parallel.deepspeed_config import loop_clips_gradients
from raylm.parallel.engine import init_distributed, make_training_engine
from raylm.parallel.experts import global_grad_norm
from raylm.parallel.groups import rank_coords
from raylm.parallel.pipeline import pipeline_coords, pipeline_eval_loss, pipeline_train_step
from raylm.parallel.plan import make_plan
from raylm.parallel.sequence import sequence_slice
from raylm.parallel.tensor import clip_tensor_parallel
from raylm.tracking.system_metrics import node_sampler
from raylm.tracking.writer import RemoteRun
from raylm.train import checkpoints
from raylm.train.batches import model_inputs, objective_generator
from raylm.train.metrics import Phases, StepTimer, memory_bytes, mfu, process_peak_flops
from raylm.train.moe_metrics import moe_metrics
from raylm.train.optimizers import optimizer_factories
from raylm.train.reports import reports_for, worker_coordinates
from raylm.train.swa import run_weight_average
from raylm.train.worker_output import DIVERGED_FILE, worker_print

FAULT_MARKER = ".fault_injected"
LOGGED_ONCE = ("train/loss", "val/loss")  # each logged group, by the metric that marks its steps


def train_loop_per_worker(config: dict) -> dict | None:
    """Train this worker's share; returns the last metrics it reported."""
    entered_at = time.time()
    rank, world_size, local_rank, node_rank = worker_coordinates(config["runtime"])
    cfg = RunConfig.from_dict(config["run"])
    # the first worker of each node samples its node's CPU, memory and GPUs into the run
    sampler = node_sampler(cfg.tracking.system_metrics_every_s, config["runtime"]["tracking"], local_rank, node_rank)
    try:
        worker = WorkerRun(cfg, config["runtime"], rank, world_size, entered_at)
        worker.run()
        return worker.reports.last
    finally:
        sampler.stop()


class WorkerRun:
    """One worker's share of a training run."""

    def __init__(self, cfg: RunConfig, runtime: dict, rank: int, world_size: int, entered_at: float | None = None):
        self.cfg, self.runtime, self.rank, self.world_size = cfg, runtime, rank, world_size
        self.entered_at = entered_at if entered_at is not None else time.time()  # when this worker's loop began
        self.phases = Phases()  # start-up and tear-down, logged as startup/* and teardown/* (bench/trial_overhead.py)
        self.specials = SpecialTokens.from_dict(runtime["special_tokens"])
        if not cfg.parallel.use_gpu:
            torch.set_num_threads(max(1, int(cfg.parallel.cpus_per_worker)))  # the CPUs Ray reserved for this worker
        torch.manual_seed(cfg.train.seed)
        init_distributed(cfg.parallel.use_gpu)
        self.phases.mark("process_group")
        self.plan = make_plan(cfg, world_size)
        # the stages of one pipeline replica, and the tensor and sequence ranks of one replica, read the same data
        self.coords = rank_coords(rank, self.plan.tp, self.plan.sp)
        self.dp_rank = pipeline_coords(rank, self.plan)[1] if self.plan.pp > 1 else self.coords.dp_rank
        self.engine = make_training_engine(cfg, self.plan, *optimizer_factories(cfg))
        self.device = self.engine.device
        self.phases.mark("engine")
        self.grad_norm: float | None = None
        self.clips = loop_clips_gradients(self.plan)  # this loop clips the gradients, not DeepSpeed
        self.loader = self._loader("train", shuffle=True)
        # rank 0 sends metrics to the driver's tracking writer; no worker opens the tracking store
        self.tracker = RemoteRun.from_handle(runtime["tracking"]) if rank == 0 else RemoteRun.disabled()
        self.reports = reports_for(runtime, cfg.train.keep_checkpoints)
        self.phases.mark("data")
        self.flops_per_token = matmul_flops_per_token(cfg.model, cfg.train.seq_len)
        self.peak = cfg.train.peak_tflops * 1e12 if cfg.train.peak_tflops else process_peak_flops(
            "cuda" if cfg.parallel.use_gpu else "cpu")
        self.phases.mark("peak_flops")
        self.step, self.last_checkpoint = 0, None
        self.skip_logging_until: dict[str, int] = {}
        self.last_eval: dict[str, float] = {}
        self.swa = run_weight_average(self.engine.module, cfg)  # None unless optim.swa

    def _loader(self, split: str, shuffle: bool, limit: int | None = None) -> TokenLoader:
        return TokenLoader(self.runtime["dataset_dir"], split, batch_size=self.plan.micro_batch,
                           rank=self.dp_rank, world_size=self.plan.dp, seed=self.cfg.data.seed,
                           shuffle=shuffle, limit=limit)

    def run(self) -> None:
        restored = checkpoints.restore(self.engine, self.rank, self.world_size, self.runtime["storage_dir"],
                                       self.runtime.get("resume_from"), swa=self.swa,
                                       given=self.reports.given_checkpoint())
        # a run continued (from a checkpoint, or from the start when it died before its first one) does not
        # log again the steps its MLflow run already holds: the same steps give the same numbers
        self.skip_logging_until = {k: self.tracker.last_step(k) for k in LOGGED_ONCE}
        if restored is not None:
            self.step, self.last_checkpoint = restored.step, restored.path
            self.loader.load_state_dict(restored.loader)
            self._print(f"resumed from {restored.path} at step {self.step}")
            if self.rank == 0:
                self.tracker.set_tag("raylm.resumed_from_step", self.step)
        self.phases.mark("restore")
        timer, self.timed_from_step = StepTimer(), self.step
        first_step = self.step + 1
        while self.step < self.cfg.train.max_steps:
            self._maybe_kill()
            losses, stats = self._train_step()
            self.step += 1
            if self.step == first_step:
                self.phases.mark("first_step")
                self._log_startup()
            if not math.isfinite(losses["train/loss"]) and self.plan.precision != "fp16":
                self._report_divergence(losses["train/loss"])
                self.tracker.flush()
                return
            if self.swa is not None:
                self.swa.update(self.step)
            if self._logs(self.step):
                self._log_train(losses, stats, timer.lap())
            evaluates = self.step % self.cfg.train.eval_every == 0 or self.step == self.cfg.train.max_steps
            if evaluates:
                self.last_eval = self.evaluate()
                self._log(self.last_eval)
            if self.step % self.cfg.train.checkpoint_every == 0 or self.step == self.cfg.train.max_steps:
                self.phases.restart()
                self._checkpoint(losses)  # reports the evaluation with the checkpoint
                self.phases.mark("checkpoint")
            elif evaluates:
                self._report(losses)  # every evaluation is reported: Tune's schedulers decide on these
            if self._paused(self.step):  # keep evaluation and saving out of tokens/s
                timer.lap()
                self.timed_from_step = self.step
        if self.cfg.train.export_model:
            self.phases.restart()
            self._export_model()
            self.phases.mark("export")
        if self.rank == 0:
            self.tracker.log_metrics({f"teardown/{k}_s": self.phases.seconds.get(k, 0.0)
                                      for k in ("checkpoint", "export")}, self.step)
        self.tracker.flush()

    def _log_startup(self) -> None:
        """Where this run's start-up went: launch (controller, worker processes, imports: from the driver's
        start of the trainer to this worker's loop), then each phase inside the worker."""
        if self.rank != 0:
            return
        launched = self.runtime.get("launched_at")
        startup = {f"startup/{k}_s": v for k, v in self.phases.seconds.items()}
        if launched is not None:
            startup["startup/launch_s"] = max(0.0, self.entered_at - launched)
        self.tracker.log_metrics(startup, self.step)

    def _logs(self, step: int) -> bool:
        """Whether ``step`` logs its training metrics: every ``log_every`` steps, the first and the last."""
        return step % self.cfg.train.log_every == 0 or step in (1, self.cfg.train.max_steps)

    def _paused(self, step: int) -> bool:
        """Whether this step evaluated or saved (work that is not training throughput)."""
        train = self.cfg.train
        return step % train.eval_every == 0 or step % train.checkpoint_every == 0

    def _micro_inputs(self, loader: TokenLoader, seed: int, index: int, micro: int) -> dict[str, torch.Tensor]:
        generator = objective_generator(seed, index, micro, self.dp_rank)
        inputs = model_inputs(self.cfg.model.arch, next(loader), self.specials, self.cfg.model.vocab_size, generator)
        if self.plan.sp > 1:  # every rank of a sequence group masks the same sequences, then keeps its slice
            inputs = sequence_slice(inputs, self.coords.sp_rank, self.plan.sp)
        return {k: v.to(self.device) for k, v in inputs.items()}

    def _train_step(self) -> tuple[dict[str, float], list]:
        """``grad_accum`` micro-batches and one optimizer update; losses averaged over all ranks."""
        micro_batches = [self._micro_inputs(self.loader, self.cfg.train.seed, self.step, micro)
                         for micro in range(self.plan.grad_accum)]
        if self.plan.pp > 1:
            loss = pipeline_train_step(self.engine, micro_batches)  # averaged over the global batch already
            return {"train/loss": loss, "train/lm_loss": loss, "train/aux_loss": 0.0}, []
        sums, stats = torch.zeros(3, dtype=torch.float64), []
        logs = self._logs(self.step + 1)
        for micro, inputs in enumerate(micro_batches):
            out = self.engine(**inputs)
            loss = out.loss * float("nan") if self.cfg.faults.nan_at_step == self.step + 1 else out.loss
            self.engine.backward(loss)
            if micro == len(micro_batches) - 1:
                self._clip_or_measure(logs)
            self.engine.step()
            sums += torch.tensor([loss.item(), out.lm_loss.item(), float(out.aux_loss.detach())], dtype=torch.float64)
            stats = out.moe_stats
        sums /= self.plan.grad_accum
        if self.world_size > 1:
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
            sums /= self.world_size
        return {"train/loss": sums[0].item(), "train/lm_loss": sums[1].item(), "train/aux_loss": sums[2].item()}, stats

    def _clip_or_measure(self, logs: bool) -> None:
        """At the optimizer step, before DeepSpeed's: clip the gradients where the loop does
        (:func:`~raylm.parallel.deepspeed_config.loop_clips_gradients`), and keep their norm for a logged step
        (DeepSpeed keeps none without ZeRO; the dense gradients are already averaged over ranks here)."""
        if self.plan.zero_stage != 0:
            return
        grad_clip = self.cfg.train.grad_clip
        if self.plan.tp > 1:  # each rank holds a share of the gradient: its norm needs the tensor group
            if self.clips and grad_clip > 0 or logs:
                self.grad_norm = clip_tensor_parallel(self.engine.module.parameters(), self.engine.mpu,
                                                      grad_clip if self.clips else 0.0)
        elif self.clips and grad_clip > 0:
            self.grad_norm = float(torch.nn.utils.clip_grad_norm_(self.engine.module.parameters(), grad_clip))
        elif logs:
            self.grad_norm = float(global_grad_norm(self.engine.module.parameters()))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean validation loss over ``eval_batches`` micro-batches per replica, and its perplexity;
        with ``optim.swa``, of the averaged weights. The replicas share out the validation split's first
        ``eval_batches * micro_batch * dp`` sequences, so the set measured is the same for every number of
        replicas with the same ``micro_batch * dp`` (one replica or two with half the micro-batch each
        measure the same loss)."""
        evaluated = self.cfg.train.eval_batches * self.plan.micro_batch * self.plan.dp
        loader = self._loader("val", shuffle=False, limit=evaluated)
        micro_batches = [self._micro_inputs(loader, self.cfg.train.seed + 1, i, 0)
                         for i in range(self.cfg.train.eval_batches)]
        with self.swa.swapped_in() if self.swa is not None else contextlib.nullcontext():
            if self.plan.pp > 1:
                val_loss = pipeline_eval_loss(self.engine, micro_batches)
            else:
                self.engine.eval()
                total = torch.tensor([sum(self.engine(**inputs).lm_loss.item() for inputs in micro_batches)],
                                     dtype=torch.float64)
                self.engine.train()
                dist.all_reduce(total, op=dist.ReduceOp.SUM)
                val_loss = total.item() / (len(micro_batches) * self.world_size)
        self._print(f"step {self.step}: val_loss {val_loss:.4f}")
        return {"val/loss": val_loss, "val/perplexity": math.exp(min(val_loss, 50.0))}

    def _log_train(self, losses: dict[str, float], stats: list, seconds: float) -> None:
        steps_since, self.timed_from_step = self.step - self.timed_from_step, self.step
        tokens_per_second = self.plan.tokens_per_step * steps_since / max(seconds, 1e-9)
        metrics = {
            **losses,
            "train/lr": self.engine.get_lr()[0],
            "train/grad_norm": float(self.engine.get_global_grad_norm() or self.grad_norm or 0.0),
            "train/tokens_seen": float(self.step * self.plan.tokens_per_step),
            "perf/tokens_per_second": tokens_per_second,
            "perf/step_seconds": seconds / steps_since,
            "perf/mfu": mfu(self.flops_per_token, tokens_per_second, self.peak, self.world_size),
            "perf/memory_bytes": memory_bytes(self.device),
            **moe_metrics(stats),
        }
        if self.plan.precision == "fp16":
            metrics["train/loss_scale"] = float(self.engine.optimizer.cur_scale)
            metrics["train/skipped_steps"] = float(self.engine.skipped_steps)
        self._print(f"step {self.step}/{self.cfg.train.max_steps}: loss {losses['train/loss']:.4f} "
                    f"lr {metrics['train/lr']:.2e} {tokens_per_second:,.0f} tok/s mfu {metrics['perf/mfu']:.2%}")
        self._log(metrics)

    def _log(self, metrics: dict[str, float]) -> None:
        group = next((k for k in LOGGED_ONCE if k in metrics), LOGGED_ONCE[0])
        if self.rank == 0 and self.step > self.skip_logging_until.get(group, -1):
            self.tracker.log_metrics(metrics, self.step)

    def _report_metrics(self, losses: dict[str, float]) -> dict[str, float]:
        """What every report carries: the losses, the last evaluation and both time axes (steps, tokens)."""
        self.tracker.flush()  # MLflow holds every point up to this report before Tune or a restart sees it
        return {**losses, **self.last_eval, "step": self.step, "tokens": self.step * self.plan.tokens_per_step}

    def _report(self, losses: dict[str, float]) -> None:
        self.reports.report(self._report_metrics(losses))

    def _checkpoint(self, losses: dict[str, float]) -> None:
        checkpoints.save_and_report(self.engine, self.step, self.loader.state_dict(), self.rank,
                                    self._report_metrics(losses), self.reports, swa=self.swa)
        self.last_checkpoint = storage.join(self.runtime["storage_dir"], checkpoints.checkpoint_dir_name(self.step))

    def _report_divergence(self, loss: float) -> None:
        """Stop every rank and leave the reason where the driver finds it (``diverged.txt``)."""
        message = (f"training diverged: the loss is {loss} at step {self.step}; last good checkpoint: "
                   f"{self.last_checkpoint or 'none (no checkpoint was saved yet)'}. Lower train.lr, raise "
                   f"train.warmup_steps or set train.grad_clip, then resume from that checkpoint")
        self._print(message)
        if self.rank == 0:
            storage.write_text(storage.join(self.runtime["storage_dir"], DIVERGED_FILE), message)

    def _maybe_kill(self) -> None:
        """Fault injection: the chosen rank's process exits abruptly before the chosen step, once; every
        step waits ``faults.step_delay_s`` first."""
        faults = self.cfg.faults
        if faults.step_delay_s:
            time.sleep(faults.step_delay_s)
        if faults.kill_rank != self.rank or faults.kill_at_step != self.step + 1:
            return
        marker = storage.join(self.runtime["storage_dir"], FAULT_MARKER)
        if storage.exists(marker):
            return
        storage.write_text(marker, f"rank {self.rank} killed before step {self.step + 1}\n")
        self._print(f"fault injection: rank {self.rank} exits before step {self.step + 1}", force=True)
        os._exit(1)

    def _export_model(self) -> None:
        from raylm.train.export import export_final_model

        export_final_model(self.engine, self.cfg, self.plan, self.rank, self.runtime, average=self.swa)

    def _print(self, message: str, force: bool = False) -> None:
        if self.rank == 0 or force:
            worker_print(message)
