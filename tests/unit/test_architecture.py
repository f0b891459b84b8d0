"""The house rules, checked: no import circles, the model free of distribution and tracking, the scaling
math free of torch, Ray and MLflow, and training workers that never load MLflow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "platform" / "raylm"


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = "raylm." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = modules()


def imports(path: Path) -> set[str]:
    """Every module an import statement names, at the top or inside a function (``from a import b``: a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    return {m: {d for d in imports(p) if d in MODULES and d != m} for m, p in MODULES.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan 1972)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def third_party(names: set[str], banned: tuple[str, ...]) -> set[str]:
    return {n for n in names if n.split(".")[0] in banned}


def test_no_import_circles():
    assert circles(graph()) == []


def test_the_circle_finder_finds_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_model_imports_no_ray_deepspeed_or_mlflow():
    for name, path in MODULES.items():
        if name.startswith("raylm.model"):
            assert not third_party(imports(path), ("ray", "deepspeed", "mlflow")), name


def test_the_model_imports_no_other_room_but_config():
    for name, path in MODULES.items():
        if name.startswith("raylm.model"):
            others = {d for d in imports(path) if d.startswith("raylm.") and d.split(".")[1] not in
                      ("model", "config", "errors")}
            assert not others, f"{name} imports {others}"


def test_the_scaling_math_reaches_no_torch_ray_or_mlflow():
    edges = graph()
    start = [m for m in MODULES if m.startswith("raylm.scaling")]
    seen, todo = set(), list(start)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += edges[m]
    for m in seen:
        assert not third_party(imports(MODULES[m]), ("torch", "ray", "mlflow", "deepspeed")), m
        assert not m.startswith(("raylm.model", "raylm.train", "raylm.parallel", "raylm.tracking")), m


def test_the_parallel_room_does_not_reach_into_training():
    for name, path in MODULES.items():
        if name.startswith("raylm.parallel"):
            assert not {d for d in imports(path) if d.startswith("raylm.train")}, name


def room(module: str) -> str:
    """The package a module lives in: raylm.scaling.fit -> scaling; raylm.config -> the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (ROOT / parts[1]).is_dir()) else ""


def test_no_private_names_across_packages():
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raylm."):
                if room(node.module) != room(name):
                    private = [a.name for a in node.names if a.name.startswith("_")]
                    assert not private, f"{name} imports {private} from {node.module}"


@pytest.mark.slow
def test_training_workers_never_load_mlflow():
    """Importing what a training worker runs loads neither MLflow nor (for the model) Ray."""
    code = ("import sys; import raylm.train.loop, raylm.train.export, raylm.parallel.engine; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_no_function_of_the_driver_rooms_takes_more_than_eight_parameters():
    """Values travel as typed objects (a session, a context, options), not threaded through long signatures."""
    too_many = []
    for name, path in MODULES.items():
        if room(name) not in ("tune", "study", "scaling", "tracking"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
                count -= bool(a.args) and a.args[0].arg in ("self", "cls")
                if count > 8:
                    too_many.append(f"{name}.{node.name} ({count})")
    assert not too_many
