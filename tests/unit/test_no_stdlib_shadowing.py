"""Scripts run as ``python jobs/x.py`` put jobs/ first on sys.path: no file there (or in bench/)
may share a name with a stdlib module, or it replaces that module for everything imported after."""

from __future__ import annotations

import sys


def test_script_folders_shadow_no_stdlib_module(repo_root):
    for folder in ("jobs", "bench"):
        for path in (repo_root / folder).glob("*.py"):
            assert path.stem not in sys.stdlib_module_names, f"{folder}/{path.name} shadows the stdlib {path.stem!r}"
