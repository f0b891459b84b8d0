"""The MLflow UI and tracking server (``mlflow server``), started the way raylm wants it.

- on 127.0.0.1 unless told otherwise, and beyond it only with MLflow's basic authentication
  (``--app-name basic-auth``, the ``mlflow[auth]`` extra): ``mlflow server`` itself has none;
- one uvicorn worker and no background job runner (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``):
  MLflow's default of 4 workers plus a runner of ~7 processes takes 35-40 s to start on 2 cores,
  one worker 6-8 s, and a UI for one user needs no more;
- the store of the embedded default (``sqlite:///<abs>/mlflow.db``) serves the artifacts beside it
  (``mlartifacts/``, where :mod:`raylm.tracking.mlflow_run` puts them); a team server names its own
  (``--artifacts-destination s3://bucket/prefix``), uploaded and downloaded through the server.

:func:`start_ui` starts one and waits until ``/health`` answers; ``raylm ui`` and the tests use it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from raylm.errors import UserError

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
AUTH_APP = "basic-auth"
START_TIMEOUT_S = 120.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS


def auth_installed() -> bool:
    """Whether MLflow's basic auth can run here (the ``mlflow[auth]`` extra brings Flask-WTF)."""
    import importlib.util

    return importlib.util.find_spec("flask_wtf") is not None


def check_exposure(host: str, app_name: str | None) -> None:
    """Refuse a server reachable beyond this machine without authentication (a :class:`UserError`)."""
    if app_name == AUTH_APP and not auth_installed():
        raise UserError("MLflow's basic authentication needs the mlflow[auth] extra, which is not installed: "
                        "pip install 'mlflow[auth]' (in this project: .venv/bin/pip install 'mlflow[auth]')")
    if not is_local(host) and app_name != AUTH_APP:
        install = "" if auth_installed() else " after installing the mlflow[auth] extra (pip install 'mlflow[auth]')"
        raise UserError(f"refusing to serve MLflow on {host}: beyond 127.0.0.1 it needs authentication. Add "
                        f"--app-name {AUTH_APP}{install}, with MLFLOW_FLASK_SERVER_SECRET_KEY and "
                        "MLFLOW_AUTH_ADMIN_PASSWORD set (see docs/tracking.md), or keep --host 127.0.0.1")


def default_artifacts(backend_uri: str) -> str | None:
    """Where the artifacts of a SQLite store live (``mlartifacts/`` beside the database), else None."""
    from raylm.tracking.mlflow_run import artifact_root

    return artifact_root(backend_uri)


def server_command(backend_uri: str, host: str = "127.0.0.1", port: int = 5000, artifacts: str | None = None,
                   app_name: str | None = None, workers: int = 1, extra_args: tuple[str, ...] = ()) -> list[str]:
    """The ``mlflow server`` command line (run with this Python, so the project's MLflow)."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
               "--host", host, "--port", str(port), "--workers", str(workers)]
    artifacts = artifacts or default_artifacts(backend_uri)
    if artifacts:
        command += ["--artifacts-destination", artifacts]
    if app_name:
        command += ["--app-name", app_name]
    return command + list(extra_args)


def server_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: this one, ``env`` on top, and no background job runner."""
    return {**os.environ, **(env or {}), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def url_of(host: str, port: int) -> str:
    """The address a browser on this machine uses (a wildcard host is reached on 127.0.0.1)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class UiServer:
    """A running ``mlflow server``: its ``url``, and ``stop()`` (it and its uvicorn worker)."""

    url: str
    backend_uri: str
    process: subprocess.Popen
    log_path: Path | None = None
    command: list[str] = field(default_factory=list)

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path and self.log_path.exists() else ""

    def wait(self) -> int:
        return self.process.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the server's process group (the server and its workers), SIGKILL after ``timeout``."""
        if self.process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> UiServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass(frozen=True)
class ServerProcess:
    """How the server process runs: ``env`` added to its environment (S3 credentials and endpoint, auth
    settings), output to ``log_path`` (else this process's stdout and stderr), ``timeout`` to come up,
    ``extra_args`` appended to ``mlflow server``."""

    env: dict[str, str] | None = None
    log_path: str | Path | None = None
    timeout: float = START_TIMEOUT_S
    extra_args: tuple[str, ...] = ()


def start_ui(backend_uri: str, port: int | None = None, host: str = "127.0.0.1", artifacts: str | None = None,
             app_name: str | None = None, workers: int = 1, process: ServerProcess = ServerProcess()) -> UiServer:
    """Start ``mlflow server`` on ``backend_uri`` and return once ``/health`` answers.

    ``port`` None picks a free one. ``artifacts`` is the ``--artifacts-destination`` (default: the
    SQLite store's ``mlartifacts/``, else MLflow's ``./mlartifacts``). ``process``: :class:`ServerProcess`.
    Raises :class:`UserError` when the host would be exposed without authentication, the port is taken
    or the server does not come up.
    """
    env, log_path, timeout, extra_args = process.env, process.log_path, process.timeout, process.extra_args
    check_exposure(host, app_name)
    bind_host = "127.0.0.1" if host == "localhost" else host
    if port is None:
        port = free_port(bind_host)
    elif port_in_use(bind_host, port):
        raise UserError(f"port {port} on {host} is in use (another MLflow UI?); pass --port with a free port")
    command = server_command(backend_uri, host, port, artifacts, app_name, workers, extra_args)
    log = open(log_path, "w") if log_path else None  # noqa: SIM115 - the server writes to it while it runs
    try:
        child = subprocess.Popen(command, env=server_env(env), stdout=log, stderr=subprocess.STDOUT if log else None,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        if log:
            log.close()  # the child holds its own descriptor
    server = UiServer(url_of(host, port), backend_uri, child, Path(log_path) if log_path else None, command)
    try:
        _wait_healthy(server, timeout)
    except BaseException:  # not up, or Ctrl-C while waiting: leave no server behind
        server.stop()
        raise
    return server


def _wait_healthy(server: UiServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.running():
            raise UserError(f"mlflow server exited with status {server.process.returncode} before it was ready"
                            + (f":\n{server.log_tail()}" if server.log_path else " (its output is above)"))
        if _healthy(server.url):
            return
        time.sleep(0.25)
    raise UserError(f"mlflow server did not answer {server.url}/health within {timeout:.0f} s"
                    + (f":\n{server.log_tail()}" if server.log_path else ""))


def _healthy(url: str) -> bool:
    try:  # never through an HTTP proxy from the environment: the server is on this machine
        with _NO_PROXY.open(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except Exception:  # noqa: BLE001 - not up yet
        return False
