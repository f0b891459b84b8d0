"""A real Ray head for the job-submission tests, started once for this package with the real CLI.

``ray start --head --block`` runs as a child process with token authentication on (Ray 2.60's
``RAY_AUTH_MODE=token``, the token in a file of its own) and its dashboard, which serves the job
API, on 127.0.0.1. Every port is chosen free, so the head lives beside the local Ray of the other
tests. It is stopped by signalling that process, never with ``ray stop`` (which stops every Ray
on the machine). It is stopped when this package's tests are done: an idle head's dashboard, agent,
log monitor and Ray Data actors take about a tenth of a core, which the rest of the session needs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import free_port

VENV_BIN = Path(sys.executable).parent


@dataclass
class RayHead:
    dashboard: str        # http://127.0.0.1:PORT, the job server's address
    token_file: Path
    temp_dir: Path
    process: subprocess.Popen

    def client_env(self, token: bool = True, **extra: str) -> dict[str, str]:
        """The environment of a `ray job` client on this machine: with the token (RAY_AUTH_MODE=token
        and its file), or with no token at all (a fresh HOME, no ~/.ray/auth_token)."""
        env = clean_env()
        if token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file))
        else:
            env["HOME"] = str(self.temp_dir / "no-token-home")
            Path(env["HOME"]).mkdir(exist_ok=True)
        env.update(extra)
        return env

    def ray(self, *args: str, token: bool = True, cwd: Path | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess:
        """Run the real ``ray`` CLI against this head."""
        return subprocess.run([str(VENV_BIN / "ray"), *args], cwd=cwd, env=self.client_env(token=token),
                              capture_output=True, text=True, timeout=timeout)


def clean_env() -> dict[str, str]:
    """This process's environment without what points at the test session's own local Ray."""
    drop = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
            "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in an entrypoint is this venv's
    return env


@pytest.fixture(scope="package")
def ray_head():
    root = Path(tempfile.mkdtemp(prefix="rayhead-"))  # short: Ray's socket paths must stay under 108 bytes
    token_file = root / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    dashboard_port = free_port()
    ports = {"--port": free_port(), "--dashboard-port": dashboard_port, "--ray-client-server-port": free_port(),
             "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
             "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port()}
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    env = clean_env()
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file),
               # Ray's State API client scans the machine for Ray instances and takes the newest; with the
               # session's local Ray beside this head, name this head's dashboard (see raylm.ray_session).
               RAY_API_SERVER_ADDRESS=dashboard,
               # Give a stopped job's driver time to end its MLflow runs (Ray's default is 3 s).
               RAY_JOB_STOP_WAIT_TIME_S="20")
    log = open(root / "ray-start.log", "w")  # noqa: SIM115 - lives as long as the head
    process = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2", "--num-gpus=0",
         "--object-store-memory=400000000", f"--temp-dir={root / 'ray'}",
         *[f"{flag}={port}" for flag, port in ports.items()]],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(dashboard, token_file, root, process)
    _wait_for_job_server(head, root / "ray-start.log")
    yield head
    # `ray start --block` takes SIGTERM but keeps its head up for 30 s and more (measured): the head's
    # processes are this fixture's own process group, so after a short grace they are killed outright
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(3)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    shutil.rmtree(root, ignore_errors=True)


def _wait_for_job_server(head: RayHead, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.process.poll() is not None:
            raise RuntimeError(f"ray start --head exited with {head.process.returncode}:\n{log.read_text()[-3000:]}")
        listed = head.ray("job", "list", "--address", head.dashboard, timeout=60)
        if listed.returncode == 0:
            return
        time.sleep(2)
    raise RuntimeError(f"the Ray head's job server did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
