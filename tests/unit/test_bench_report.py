"""The benchmark report: figures judge their goals, sections merge into results.json, the table prints."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str, module_name: str):
    """A bench script as a module, by its path (bench/ is not put on sys.path for the whole session)."""
    spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


_common = _load("_common", "_common")  # the name bench scripts import it by
report = _load("report", "raylm_bench_report")


def test_figure_ratio_and_goals():
    f = _common.Figure("tok/s", 97.0, 100.0, "tok/s", goal=0.97)
    assert f.ratio == pytest.approx(0.97) and f.met and f.goal_text == "ratio >= 0.97x"
    missed = _common.Figure("tok/s", 90.0, 100.0, goal=1.2)
    assert missed.met is False and missed.miss == "missed by 25% (0.9 against 1.2)"
    paired = _common.Figure("tok/s", 90.0, 100.0, goal=1.0, ratio=1.1)  # a paired ratio is kept as given
    assert paired.ratio == 1.1 and paired.met
    lower = _common.Figure("overhead", 6.0, None, "s", goal=5.0, goal_on="raylm", higher_is_better=False)
    assert lower.ratio is None and lower.met is False and lower.goal_text == "raylm <= 5 s"
    assert lower.miss == "missed by 20% (6 against 5)"
    within = _common.Figure("memory", 130.0, 100.0, "MiB", tolerance=0.25)
    assert within.met is False and within.miss == "off by 30% (allowed 25%)"
    assert _common.Figure("memory", 80.0, 100.0, tolerance=0.25).met
    assert _common.Figure("no goal", 1.0, 2.0).met is None
    assert _common.Figure("missing", float("nan"), 2.0, goal=1.0).met is None


def test_sections_merge_and_the_report_prints_them(tmp_path, capsys):
    path = tmp_path / "results.json"
    _common.write_section("a", [_common.Figure("first", 2.0, 1.0, "x/s", "anchor", goal=1.5)], {"k": 1}, 3.0, path)
    _common.write_section("b", [_common.Figure("second", 1.0, 2.0, goal=1.0)], {}, None, path)
    _common.write_section("a", [_common.Figure("first again", 2.0, 1.0, goal=1.5)], {"k": 2}, None, path)
    data = json.loads(path.read_text())
    assert list(data["benchmarks"]) == ["a", "b"] and data["benchmarks"]["a"]["details"] == {"k": 2}
    assert data["benchmarks"]["a"]["figures"][0]["figure"] == "first again"
    assert {"cpu", "cpu_cores", "gpu"} <= set(data["machine"])
    row = data["benchmarks"]["b"]["figures"][0]
    assert set(row) >= {"figure", "raylm", "anchor", "ratio", "goal", "met", "unit", "notes"}
    assert report.main(["--results", str(path)]) == 0
    out = capsys.readouterr().out
    assert "first again" in out and "2.00x" in out and "0.50x" in out
    assert "goals: 1 met, 1 missed" in out and "missed: second: missed by 50%" in out
    assert report.main(["--results", str(path), "--markdown"]) == 0
    assert "| figure | raylm | anchor | ratio | goal | met |" in capsys.readouterr().out
    assert report.main(["--results", str(tmp_path / "none.json")]) == 1


def test_alternate_rotates_the_order():
    calls = []
    out = _common.alternate(3, {name: (lambda name=name: calls.append(name) or len(calls)) for name in "abc"})
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert out["a"] == [1, 6, 8]
    assert _common.steady([9.0, 1.0, 2.0, 3.0], skip=1) == [1.0, 2.0, 3.0]
    assert _common.steady([9.0, 1.0], skip=5) == [1.0]
