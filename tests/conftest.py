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
