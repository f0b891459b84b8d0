"""platform/ holds the package but must never shadow Python's stdlib ``platform`` module."""

from __future__ import annotations

import platform
import subprocess
import sys


def test_stdlib_platform_in_tests():
    assert platform.system()
    assert not (hasattr(platform, "__path__")), "a package named 'platform' shadows the stdlib module"


def test_stdlib_platform_from_repo_root(repo_root):
    assert not (repo_root / "platform" / "__init__.py").exists()
    code = "import platform, raylm; print(platform.system(), raylm.__file__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    system, raylm_file = result.stdout.split()
    assert system == platform.system()
    assert raylm_file.startswith(str(repo_root / "platform" / "raylm"))


def test_job_entrypoint_runs_from_repo_root(repo_root):
    """A job script run from the repo root (as ``ray job submit`` does) sees the stdlib module."""
    result = subprocess.run(
        [sys.executable, "jobs/show_config.py", "jobs/configs/gpt_tiny.yaml"],
        cwd=repo_root, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "platform.system()" in result.stdout
