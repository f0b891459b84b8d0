"""Throughput, model FLOPs utilisation and memory.

MFU (Chowdhery et al. 2022, "PaLM", Appendix B) is achieved model FLOP/s over peak FLOP/s:
``flops_per_token * tokens_per_second / (peak_per_device * devices)``, with the model's
training FLOPs per token from :func:`raylm.model.counting.flops_per_token` less the input
embedding lookup (a gather, not a matmul). The peak is configured (``train.peak_tflops``)
or measured at start by timing a square matmul; on a machine shared with other work the
measured peak, and so MFU, is approximate.
"""

from __future__ import annotations

import os
import time

import torch


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


class StepTimer:
    """Wall time and tokens since the last :meth:`lap`."""

    def __init__(self):
        self._start = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self._start = now - self._start, now
        return elapsed
