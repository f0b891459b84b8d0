"""The system-metrics sampler of training runs (no Ray, no MLflow): readings, names, steps, stopping."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import types

import psutil
import pytest

from raylm.config import TrackingConfig
from raylm.tracking.system_metrics import (
    GpuProbe,
    SystemMetricsSampler,
    gpu_probe,
    metric_prefix,
    node_sampler,
)


class Recorder:
    """A ``send`` that keeps what it was sent and signals after ``n`` readings."""

    def __init__(self, n: int = 1):
        self.sent: list[tuple[dict[str, float], int]] = []
        self.enough = threading.Event()
        self.n = n

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        self.sent.append((metrics, step))
        if len(self.sent) >= self.n:
            self.enough.set()


def test_a_reading_has_mlflows_names_and_plausible_values():
    reading = SystemMetricsSampler(Recorder(), 10).sample()
    for name in ("cpu_utilization_percentage", "system_memory_usage_megabytes", "system_memory_usage_percentage",
                 "disk_usage_percentage", "network_receive_megabytes"):
        assert f"system/{name}" in reading
    assert 0 <= reading["system/cpu_utilization_percentage"] <= 100
    assert 0 < reading["system/system_memory_usage_percentage"] < 100
    total_mb = psutil.virtual_memory().total / 1e6
    assert 10 < reading["system/system_memory_usage_megabytes"] < total_mb
    assert all(isinstance(v, float) for v in reading.values())


def test_other_nodes_are_prefixed_like_mlflows_node_id():
    assert metric_prefix(0) == "system/"
    assert metric_prefix(2) == "system/node_2/"
    reading = SystemMetricsSampler(Recorder(), 10, prefix=metric_prefix(1)).sample()
    assert "system/node_1/cpu_utilization_percentage" in reading
    assert not [name for name in reading if not name.startswith("system/node_1/")]


def test_samples_count_steps_and_stop_takes_a_last_reading_and_flushes():
    recorder, flushed = Recorder(n=3), threading.Event()
    sampler = SystemMetricsSampler(recorder, 0.05, first_step=lambda: 7, flush=flushed.set).start()
    assert recorder.enough.wait(10), "no readings within 10 s"
    sampler.stop()
    assert not sampler.running and sampler.error is None
    steps = [step for _, step in recorder.sent]
    assert steps == list(range(7, 7 + len(steps))) and len(steps) >= 4  # 3 + the last one
    assert flushed.is_set()
    count = len(recorder.sent)
    time.sleep(0.2)
    assert len(recorder.sent) == count  # nothing after stop


def test_stop_is_prompt_and_a_short_run_still_gets_one_reading():
    recorder = Recorder()
    sampler = SystemMetricsSampler(recorder, 600).start()
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 5
    assert [step for _, step in recorder.sent] == [0]
    assert "system/cpu_utilization_percentage" in recorder.sent[0][0]


def test_zero_disables_it():
    recorder = Recorder()
    sampler = SystemMetricsSampler(recorder, 0).start()
    assert not sampler.running
    sampler.stop()
    assert recorder.sent == []
    assert TrackingConfig().system_metrics_every_s == 10
    with pytest.raises(ValueError):
        TrackingConfig(system_metrics_every_s=-1)


def test_a_run_that_ended_is_not_written_to():
    recorder = Recorder()
    sampler = SystemMetricsSampler(recorder, 0.01, alive=lambda: False).start()
    sampler._thread.join(5)
    assert not sampler.running and recorder.sent == []


def test_a_failing_send_stops_sampling_not_the_caller():
    def broken(metrics, step):
        raise ConnectionError("writer is gone")

    sampler = SystemMetricsSampler(broken, 0.01)
    with pytest.warns(UserWarning, match="system metrics stopped: ConnectionError"):
        sampler.start()
        sampler._thread.join(5)
    assert isinstance(sampler.error, ConnectionError)
    sampler.stop()


def test_workers_other_than_the_first_of_a_node_and_untracked_runs_sample_nothing():
    handle = {"writer": "w", "run_id": "r", "enabled": True, "uri": "sqlite:///x.db"}
    assert not node_sampler(10, handle, local_rank=1, node_rank=0).running
    assert not node_sampler(0, handle, local_rank=0, node_rank=0).running
    assert not node_sampler(10, {"writer": None, "enabled": False}, local_rank=0, node_rank=0).running
    assert not node_sampler(10, None, local_rank=0, node_rank=0).running


def test_no_gpu_means_no_gpu_metrics():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_probe() is None
    assert not [name for name in SystemMetricsSampler(Recorder(), 10).sample() if "gpu" in name]


def _fake_nvml(n_gpus: int = 4):
    def handle_by_index(i):
        return ("index", i)

    def memory_info(handle):
        return types.SimpleNamespace(used=2e9 * (handle[1] + 1), total=80e9)

    return types.SimpleNamespace(
        nvmlDeviceGetCount=lambda: n_gpus,
        nvmlDeviceGetHandleByIndex=handle_by_index,
        nvmlDeviceGetHandleByUUID=lambda uuid: ("index", 3),
        nvmlDeviceGetMemoryInfo=memory_info,
        nvmlDeviceGetUtilizationRates=lambda handle: types.SimpleNamespace(gpu=50 + handle[1]),
        nvmlDeviceGetPowerUsage=lambda handle: 300_000,
        nvmlDeviceGetEnforcedPowerLimit=lambda handle: 700_000,
    )


def test_gpu_readings_use_mlflows_names_for_the_visible_gpus(monkeypatch):
    from raylm.tracking.system_metrics import _visible_handles

    nvml = _fake_nvml()
    handles = _visible_handles(nvml, "2,GPU-8f2a")  # this process's cuda:0 is GPU 2, cuda:1 the one with that UUID
    reading = SystemMetricsSampler(Recorder(), 10, gpu=GpuProbe(nvml, handles)).sample()
    assert reading["system/gpu_0_utilization_percentage"] == 52
    assert reading["system/gpu_1_utilization_percentage"] == 53
    assert reading["system/gpu_0_memory_usage_megabytes"] == 6000
    assert reading["system/gpu_1_memory_usage_percentage"] == 10
    assert reading["system/gpu_0_power_usage_watts"] == 300
    assert "system/gpu_2_utilization_percentage" not in reading
    assert len(_visible_handles(nvml, None)) == 4


def test_a_gpu_reading_that_fails_is_left_out():
    nvml = _fake_nvml(1)

    def no_power(handle):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    nvml.nvmlDeviceGetPowerUsage = no_power
    reading = GpuProbe(nvml, _visible_handles_all(nvml)).read()
    assert set(reading) == {"gpu_0_memory_usage_megabytes", "gpu_0_memory_usage_percentage",
                            "gpu_0_utilization_percentage"}


def _visible_handles_all(nvml):
    from raylm.tracking.system_metrics import _visible_handles

    return _visible_handles(nvml, None)


def test_the_sampler_never_imports_mlflow():
    """Training workers run it, and workers must never open the tracking store."""
    code = ("import sys, raylm.tracking.system_metrics as m; m.node_sampler(0, None, 0, 0); "
            "assert 'mlflow' not in sys.modules, 'mlflow imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
