"""Throughput, model FLOPs utilisation and memory.

MFU (Chowdhery et al. 2022, "PaLM", Appendix B) is achieved model FLOP/s over peak FLOP/s:
``flops_per_token * tokens_per_second / (peak_per_device * devices)``, with the model's
training FLOPs per token from :func:`raylm.model.counting.flops_per_token` less the input
embedding lookup (a gather, not a matmul). The peak is configured (``train.peak_tflops``)
or measured at start by timing a square matmul; on a machine shared with other work the
measured peak, and so MFU, is approximate.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import torch

PEAK_CACHE = Path(tempfile.gettempdir()) / "raylm-peak-flops.json"
PEAK_CACHE_VALID_S = 6 * 3600


def process_peak_flops(device: str) -> float:
    """:func:`measure_peak_flops` once per node, device model and thread count: a trial process that trains
    run after run (a reused Tune trial actor) measures once, and so does a node whose workers start anew
    for every trial (the figure is kept ``PEAK_CACHE_VALID_S`` in a file in the node's temporary directory)."""
    return _peak_flops(device, torch.get_num_threads())


@functools.cache
def _peak_flops(device: str, threads: int) -> float:
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    key = f"{socket.gethostname()}|{name}|{threads}"
    cached = _read_peak_cache().get(key)
    if cached and time.time() - cached["at"] < PEAK_CACHE_VALID_S:
        return float(cached["flops"])
    flops = measure_peak_flops(device=device)
    entries = _read_peak_cache()
    entries[key] = {"flops": flops, "at": time.time()}
    partial = PEAK_CACHE.with_suffix(f".{os.getpid()}.partial")
    try:
        partial.write_text(json.dumps(entries))
        partial.replace(PEAK_CACHE)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        pass  # a read-only temporary directory: measured again next time
    return flops


def _read_peak_cache() -> dict:
    try:
        return json.loads(PEAK_CACHE.read_text())
    except (OSError, ValueError):
        return {}


def measure_peak_flops(size: int = 1024, windows: int = 5, seconds: float = 0.2, device: str = "cpu") -> float:
    """FLOP/s of ``size x size`` fp32 matmuls (2 * size^3 each) on one device: the best of
    ``windows`` timed windows, so a moment of contention from other processes lowers it less."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm up
    best = 0.0
    for _ in range(windows):
        runs, start = 0, time.perf_counter()
        while True:
            a @ b
            runs += 1
            if device != "cpu":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, 2.0 * size**3 * runs / elapsed)
    return best


def mfu(flops_per_token: float, tokens_per_second: float, peak_flops_per_device: float, devices: int) -> float:
    return flops_per_token * tokens_per_second / (peak_flops_per_device * devices)


def memory_bytes(device: torch.device) -> float:
    """Peak allocated accelerator memory, or this process's resident memory on CPU."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    try:
        import psutil

        return float(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:  # pragma: no cover - psutil comes with ray[default]
        return float("nan")


class Phases:
    """Seconds spent in named phases of a run (start-up and tear-down), each measured from the previous mark."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def restart(self) -> None:
        """Start timing the next phase from now (time since the last mark belongs to no phase)."""
        self._last = time.perf_counter()


class StepTimer:
    """Wall time and tokens since the last :meth:`lap`."""

    def __init__(self):
        self._start = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self._start = now - self._start, now
        return elapsed
