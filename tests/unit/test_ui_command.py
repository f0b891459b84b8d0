"""`raylm ui`: argument checks (nothing exposed beyond 127.0.0.1 without authentication), the server
command it runs, and one real start on a free port against a temporary SQLite store (no Ray)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from tests.conftest import REPO_ROOT

from raylm import cli
from raylm.errors import UserError
from raylm.tracking import ui_server
from raylm.tracking.ui_server import check_exposure, server_command, server_env, url_of


def _ui(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["ui", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_a_host_beyond_this_machine_is_refused_without_authentication(capsys, host):
    code, out, err = _ui(capsys, "--host", host)
    assert code == 2 and out == ""
    assert f"refusing to serve MLflow on {host}" in err and "--app-name basic-auth" in err
    if not ui_server.auth_installed():
        assert "pip install 'mlflow[auth]'" in err


def test_basic_auth_without_the_auth_extra_says_how_to_install_it(capsys, monkeypatch):
    monkeypatch.setattr(ui_server, "auth_installed", lambda: False)
    code, _, err = _ui(capsys, "--host", "0.0.0.0", "--app-name", "basic-auth")
    assert code == 2 and "needs the mlflow[auth] extra" in err and "pip install 'mlflow[auth]'" in err


def test_exposure_rules(monkeypatch):
    for host in ("127.0.0.1", "localhost", "::1"):
        check_exposure(host, None)
    with pytest.raises(UserError, match="needs authentication"):
        check_exposure("0.0.0.0", None)
    monkeypatch.setattr(ui_server, "auth_installed", lambda: True)
    check_exposure("0.0.0.0", "basic-auth")  # exposed, with authentication: allowed


def test_bad_port_and_workers_exit_2(capsys):
    code, _, err = _ui(capsys, "--port", "70000")
    assert code == 2 and "not a port number" in err
    code, _, err = _ui(capsys, "--workers", "0")
    assert code == 2 and "at least 1" in err


def test_a_tracking_server_store_is_not_served_again(capsys):
    code, out, _ = _ui(capsys, "--tracking.tracking_uri", "http://127.0.0.1:5999")
    assert code == 0 and "already an MLflow server: open http://127.0.0.1:5999" in out


def test_the_server_command_is_local_with_one_worker_and_no_job_runner(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = server_command(store, port=5123)
    assert command[1:4] == ["-m", "mlflow", "server"]
    args = dict(zip(command[4::2], command[5::2], strict=True))
    assert args == {"--backend-store-uri": store, "--host": "127.0.0.1", "--port": "5123", "--workers": "1",
                    "--artifacts-destination": (tmp_path / "mlartifacts").as_uri()}
    team = server_command("postgresql://u:p@127.0.0.1:5432/mlflow", artifacts="s3://bucket/mlflow")
    assert team[team.index("--artifacts-destination") + 1] == "s3://bucket/mlflow"
    assert server_env({"AWS_ENDPOINT_URL": "http://x"})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert url_of("0.0.0.0", 5000) == "http://127.0.0.1:5000" and url_of("::1", 5000) == "http://[::1]:5000"


def _read_until(process: subprocess.Popen, marker: str, timeout: float) -> str:
    """stdout of ``process`` up to the first line containing ``marker``."""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    text, deadline = "", time.monotonic() + timeout
    while marker not in text and time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = process.stdout.readline()
        if not line:
            break
        text += line
    return text


@pytest.mark.slow
def test_raylm_ui_serves_the_store_and_links_to_the_experiments_runs(tmp_path):
    """The command a user runs: up within a minute on 2 busy cores, /health answers, the experiment
    link opens the runs view, and SIGTERM to the command stops the server."""
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = MlflowClient(store).create_experiment("ui-test")
    port = ui_server.free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "raylm.cli", "ui", "--port", str(port),
                                "--tracking.tracking_uri", store, "--tracking.experiment", "ui-test"],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        out = _read_until(process, "experiment 'ui-test'", timeout=120)
        startup = time.monotonic() - started
        url = f"http://127.0.0.1:{port}"
        assert f"MLflow UI: {url}" in out, out
        assert f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning" in out
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{url}/health", timeout=5) as response:
            assert response.status == 200
        print(f"raylm ui answered after {startup:.1f} s")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 143
    assert not ui_server.port_in_use("127.0.0.1", port), "the server outlived the command"
