"""Shared test set-up: the repository root and a helper to run the CLI as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = REPO_ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``raylm ARGS`` in a subprocess (the installed console script's module) and capture output."""
    return subprocess.run(
        [sys.executable, "-m", "raylm.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 API server on 127.0.0.1, started once per session (see tests/services.py)."""
    from tests.services import start_s3_server

    server = start_s3_server(tmp_path_factory.mktemp("s3-server"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server on 127.0.0.1, started once per session; skipped where PostgreSQL is not
    installed (`.ci/run` installs it)."""
    from tests.services import postgres_available, start_postgres

    if not postgres_available():
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = start_postgres()
    yield server
    server.stop()
