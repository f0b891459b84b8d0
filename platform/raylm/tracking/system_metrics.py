"""System metrics of every training run: CPU, memory, disk and network, and the GPUs when there are any.

MLflow's own monitor (``mlflow.enable_system_metrics_logging``) watches only runs started with
``mlflow.start_run`` in the process that opens the store. raylm creates its runs with the client API
in the tracking writer (:mod:`raylm.tracking.writer`), and training workers never import mlflow. So
the first worker on each node (local rank 0) samples its node in a daemon thread every
``tracking.system_metrics_every_s`` seconds and sends the readings through the writer, with MLflow's
names (the UI shows ``system/...`` metrics in the run's "System metrics" tab) and MLflow's step, a
sample counter. Node 0 logs ``system/<name>``, node k ``system/node_k/<name>`` (MLflow's ``node_id``
prefix). A worker that restarts after a failure continues the counter where the run's curve ends.

This module imports psutil (and torch or nvidia-ml-py for GPUs), never mlflow.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import psutil

PREFIX = "system/"
FIRST_SAMPLE_S = 1.0  # the first reading comes soon after the start, so even a short run has one
MB = 1e6  # MLflow's monitors report decimal megabytes


def metric_prefix(node_rank: int) -> str:
    """``system/`` on the first node, ``system/node_k/`` on node k."""
    return PREFIX if node_rank == 0 else f"{PREFIX}node_{node_rank}/"


class GpuProbe:
    """Device-wide utilisation, memory and power of GPUs through NVML (``nvidia-ml-py``).

    It reads the GPUs this process may use (``CUDA_VISIBLE_DEVICES``, by index or UUID), named
    ``gpu_<i>`` by their CUDA index in this process (``cuda:<i>``), as MLflow does.
    """

    def __init__(self, nvml: Any, handles: list):
        self.nvml, self.handles = nvml, handles

    @classmethod
    def create(cls) -> GpuProbe | None:
        """A probe, or None where NVML is not installed or finds no GPU."""
        try:
            import pynvml

            pynvml.nvmlInit()
            return cls(pynvml, _visible_handles(pynvml, os.environ.get("CUDA_VISIBLE_DEVICES")))
        except Exception:  # noqa: BLE001 - no NVML, no driver or no GPU: no GPU metrics
            return None

    def read(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for i, handle in enumerate(self.handles):
            for read in (self._memory, self._utilization, self._power):
                try:
                    metrics.update(read(i, handle))
                except Exception:  # noqa: BLE001 - a reading a GPU does not support is left out
                    continue
        return metrics

    def _memory(self, i: int, handle) -> dict[str, float]:
        memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
        return {f"gpu_{i}_memory_usage_megabytes": memory.used / MB,
                f"gpu_{i}_memory_usage_percentage": 100.0 * memory.used / memory.total}

    def _utilization(self, i: int, handle) -> dict[str, float]:
        return {f"gpu_{i}_utilization_percentage": float(self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu)}

    def _power(self, i: int, handle) -> dict[str, float]:
        milliwatts = self.nvml.nvmlDeviceGetPowerUsage(handle)
        limit = self.nvml.nvmlDeviceGetEnforcedPowerLimit(handle)
        return {f"gpu_{i}_power_usage_watts": milliwatts / 1000,
                f"gpu_{i}_power_usage_percentage": 100.0 * milliwatts / limit}


def _visible_handles(nvml: Any, visible: str | None) -> list:
    if visible is None:
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    handles = []
    for entry in (e.strip() for e in visible.split(",") if e.strip()):
        if entry.isdigit():
            handles.append(nvml.nvmlDeviceGetHandleByIndex(int(entry)))
        else:  # GPU-<uuid> or MIG-<uuid>
            handles.append(nvml.nvmlDeviceGetHandleByUUID(entry))
    return handles


class TorchGpuProbe:
    """Without NVML: the memory in use on this worker's own GPU (``torch.cuda.mem_get_info``, device-wide);
    no utilisation (torch reads that through NVML too)."""

    def __init__(self, device: int):
        self.device = device

    def read(self) -> dict[str, float]:
        import torch

        free, total = torch.cuda.mem_get_info(self.device)
        return {f"gpu_{self.device}_memory_usage_megabytes": (total - free) / MB,
                f"gpu_{self.device}_memory_usage_percentage": 100.0 * (total - free) / total}


def gpu_probe() -> GpuProbe | TorchGpuProbe | None:
    """The GPU probe for this process: NVML, else torch's view of the current device, else None
    (no CUDA). Call it from the thread that set the CUDA device (Ray Train's worker thread)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return GpuProbe.create() or TorchGpuProbe(torch.cuda.current_device())
    except Exception:  # noqa: BLE001 - a broken CUDA set-up leaves GPU metrics out, never training
        return None


class SystemMetricsSampler:
    """Samples this machine every ``every_s`` seconds in a daemon thread and sends each reading as
    ``send(metrics, step)``, ``step`` counting samples from ``first_step`` (an int, or a callable the
    thread calls first: where a restarted worker's curve continues).

    It stops when :meth:`stop` is called (after one last reading, so a run shorter than ``every_s``
    still has one, then ``flush()``), when ``alive()`` says the run has ended (a run ended elsewhere
    is never written to again), or at the first error (sampling never stops training; the error is
    kept in ``error`` and warned about). ``every_s=0`` disables it: :meth:`start` does nothing.
    """

    def __init__(self, send: Callable[[dict[str, float], int], None], every_s: float, prefix: str = PREFIX,
                 first_step: int | Callable[[], int] = 0, gpu: GpuProbe | TorchGpuProbe | None = None,
                 alive: Callable[[], bool] | None = None, flush: Callable[[], None] | None = None):
        self.send, self.every_s, self.prefix = send, float(every_s), prefix
        self.first_step, self.gpu, self.alive, self.flush = first_step, gpu, alive, flush
        self.step = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._net_start = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def sample(self) -> dict[str, float]:
        """One reading, names prefixed. CPU utilisation is the average since the previous reading."""
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(os.sep)
        net = psutil.net_io_counters()
        if self._net_start is None:
            self._net_start = net
        metrics = {
            "cpu_utilization_percentage": psutil.cpu_percent(interval=None),
            "system_memory_usage_megabytes": memory.used / MB,
            "system_memory_usage_percentage": 100.0 * memory.used / memory.total,
            "disk_usage_percentage": disk.percent,
            "disk_usage_megabytes": disk.used / MB,
            "disk_available_megabytes": disk.free / MB,
            "network_receive_megabytes": (net.bytes_recv - self._net_start.bytes_recv) / MB,
            "network_transmit_megabytes": (net.bytes_sent - self._net_start.bytes_sent) / MB,
            **(self.gpu.read() if self.gpu is not None else {}),
        }
        return {self.prefix + name: round(float(value), 2) for name, value in metrics.items()}

    def start(self) -> SystemMetricsSampler:
        if self.every_s > 0 and self._thread is None:
            psutil.cpu_percent(interval=None)  # starts the CPU-time window of the first reading
            self._net_start = psutil.net_io_counters()
            self._thread = threading.Thread(target=self._loop, name="raylm-system-metrics", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Take a last reading, send it, wait (at most ``timeout`` s) until it is sent and written."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        try:
            self.step = self.first_step() if callable(self.first_step) else int(self.first_step)
            wait = min(self.every_s, FIRST_SAMPLE_S)
            while not self._stop.wait(wait):
                if self.alive is not None and not self.alive():
                    return
                self._send()
                wait = self.every_s
            self._send()
            if self.flush is not None:
                self.flush()
        except Exception as exc:  # noqa: BLE001 - sampling never stops training
            self.error = exc
            warnings.warn(f"system metrics stopped: {type(exc).__name__}: {exc}", stacklevel=1)

    def _send(self) -> None:
        self.send(self.sample(), self.step)
        self.step += 1


def node_sampler(every_s: float, tracking_handle: dict | None, local_rank: int, node_rank: int) -> SystemMetricsSampler:
    """The sampler of one training worker: started on the first worker of each node (local rank 0)
    when tracking is on and ``every_s > 0``; a sampler that does nothing everywhere else.

    It logs through its own :class:`~raylm.tracking.writer.RemoteRun` of the run, checks before each
    reading that the run is still RUNNING (a run the driver ended, or whose writer is gone, is left
    alone) and continues the step counter of a run that restarted.
    """
    from raylm.tracking.writer import RemoteRun

    run = RemoteRun.from_handle(tracking_handle) if local_rank == 0 and every_s > 0 else RemoteRun.disabled()
    if not run.enabled:
        return SystemMetricsSampler(lambda metrics, step: None, 0)
    prefix = metric_prefix(node_rank)
    return SystemMetricsSampler(
        run.log_metrics, every_s, prefix=prefix, gpu=gpu_probe(),
        first_step=lambda: run.last_step(prefix + "cpu_utilization_percentage") + 1,
        alive=lambda: run.status() == "RUNNING", flush=lambda: run.flush(timeout=10.0),
    ).start()
