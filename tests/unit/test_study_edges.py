"""Grids that fix their own edges: where a budget's minimum is at an edge, which sizes are added beyond it, and
every limit that stops it, with known answers on the tiny study's family (sizes 5,240, 6,112, 12,016, 15,296,
20,328, 27,552, 42,880, 61,280, 82,752; below it the one-layer, one-head models 6 and 4 wide, narrower than its
head_dim of 8: 3,786 and 2,428) and losses from known functions of N."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tests.ray.study_helpers import write_study
from tests.unit.test_study_show import record_point

from raylm.config import ModelConfig
from raylm.errors import UserError
from raylm.model import build_model
from raylm.model.counting import count_params
from raylm.scaling.isoflop import NARROW_MIN_WIDTH, ModelFamily, narrow_shapes
from raylm.study.config import load_study
from raylm.study.description import study_description
from raylm.study.edges import edge_of, extend_edges, grid_step, next_point, prior_warnings
from raylm.study.grid import build_grid, family_of
from raylm.study.record import StudyRecord
from raylm.study.results import PointResult, recorded_result
from raylm.study.show import save_study, show_study
from raylm.study.summary import outcome_summary

FAMILY = [5240, 6112, 12016, 15296, 20328, 27552, 42880, 61280, 82752]
NARROW = {6: 3786, 4: 2428}  # d_model: N of the one-layer, one-head models below the family's smallest (8 wide)
NO_SMALLER = ("the family has no smaller model than N=2,428, one-head models narrower than family.head_dim=8 "
              "included (none is narrower than d_model=4)")


def bigger_is_better(params: int, budget: float) -> float:
    return 5.0 - 0.1 * math.log(params)


def smaller_is_better(params: int, budget: float) -> float:
    return 4.0 + 0.1 * math.log(params)


class Trainer:
    """Trains points instantly: each loss is ``loss(N, C)``; remembers what each call trained."""

    def __init__(self, loss):
        self.loss, self.calls = loss, []

    def __call__(self, points):
        self.calls.append([p.label for p in points])
        return [PointResult(p, p.label, "FINISHED", None, self.loss(p.grid.params, p.grid.budget)) for p in points]


def tiny(tmp_path, **settings):
    """The tiny study with edge extension as it is by default: on, 2 sizes per budget."""
    return load_study(write_study(tmp_path, **{"edges": {}, **settings}))


def extended(tmp_path, loss, corpus_tokens=None, **settings):
    study = tiny(tmp_path, **settings)
    train = Trainer(loss)
    results, report = extend_edges(study, train(build_grid(study)), train, corpus_tokens, log=lambda line: None)
    return study, train, results, report


def added(report) -> dict[float, list[int]]:
    return {b.budget: [r.point.grid.params for r in b.added] for b in report.budgets}


# where the minimum is


SIZES = [1000, 2000, 4000, 8000, 16000]


@pytest.mark.parametrize("losses,side", [
    ([3.0, 3.1, 3.2, 3.3, 3.4], "small"),   # best run at the smallest size
    ([3.4, 3.3, 3.2, 3.1, 3.0], "large"),   # best run at the largest size
    ([3.3, 3.0, 3.05, 3.2, 3.5], None),     # an interior minimum with the parabola's vertex inside
    ([3.6, 3.1, 3.9, 3.7, 3.8], "small"),   # best run interior, the (noisy) profile's vertex below the smallest
    ([3.8, 3.7, 3.9, 3.1, 3.6], "large"),   # the same mirrored: the vertex above the largest
    ([3.6, 3.3, 3.2, 3.6, 3.0], "large"),   # a best run at an edge is the edge, whatever the vertex
    ([3.0, 3.5, 3.6, 3.5, 3.0 + 1e-3], "small"),
    ([3.3, 3.1, 3.5, 3.5, 3.2], None),      # a concave fit has no vertex to place: inside
])
def test_the_minimum_is_at_an_edge_when_the_best_run_or_the_vertex_is(losses, side):
    edge = edge_of(SIZES, losses)
    assert (edge.side if edge else None) == side
    shuffled = edge_of(SIZES[::-1], losses[::-1])  # the order of the runs does not matter
    assert (shuffled.side if shuffled else None) == side


def test_the_vertex_case_names_the_vertex_outside_the_sizes():
    losses = [3.6, 3.1, 3.9, 3.7, 3.8]
    c2, c1, _ = np.polyfit(np.log(SIZES), losses, 2)
    vertex = math.exp(-c1 / (2 * c2))
    assert c2 > 0 and vertex < 1000  # the known answer the case is built on (N=354)
    assert edge_of(SIZES, losses).why == (f"its parabola's minimum (N={vertex:,.0f}) lies below its smallest size, "
                                          "N=1,000")
    assert edge_of([1000, 2000, 4000], [3.0, 2.9, 2.95]) is None  # three sizes: the vertex is always between
    assert edge_of(SIZES, [3.4, 3.3, 3.2, 3.1, 3.0]).why == "its best loss (3.0000) is at its largest size, N=16,000"
    assert edge_of([1000], [3.0]) is None


# which sizes are added, and where it stops


def test_a_minimum_at_the_large_edge_is_extended_up_to_the_cap(tmp_path):
    study, train, results, report = extended(tmp_path, bigger_is_better)
    assert grid_step(study) == pytest.approx(math.sqrt(3))  # spread 3 over 2 steps
    # largest sizes 12,016 / 15,296 / 20,328; each next size is the family's model nearest sqrt(3) x the edge
    assert added(report) == {2e8: [20328], 4e8: [27552, 42880], 8e8: [42880, 82752]}
    assert len(train.calls) == 3 and len(results) == 9 + 5  # the grid, then two rounds of one size per budget
    by_budget = {b.budget: b for b in report.budgets}
    assert by_budget[2e8].limit == ("the next larger model, N=42,880, would train 6 optimizer steps, fewer than "
                                    "min_steps=10")
    assert "cap of 2 added size(s) per budget (edges.max_points_per_budget)" in by_budget[4e8].limit
    assert "cap of 2" in by_budget[8e8].limit
    for b in report.budgets:
        assert b.first.side == "large" and b.now is not None  # still at an edge: every minimum is the largest
        for r in b.added:
            g = r.point.grid
            assert r.point.kind == "grid" and r.point.label.endswith("-edge") and r.loss is not None
            assert g.params in FAMILY and g.steps >= study.config.min_steps and abs(g.flops / g.budget - 1) < 0.1
            assert r.point.overrides["train.max_steps"] == g.steps
    sizes = [(r.point.grid.budget, r.point.grid.params) for r in results]
    assert len(sizes) == len(set(sizes))  # no size trained twice at a budget
    assert report.tag() == "extended 2e+08 (+1), 4e+08 (+2), 8e+08 (+2); still at an edge 2e+08, 4e+08, 8e+08"


def test_a_higher_cap_stops_where_the_family_ends(tmp_path):
    _, _, _, report = extended(tmp_path, bigger_is_better, edges={"max_points_per_budget": 3})
    assert added(report)[8e8] == [42880, 82752]
    (top,) = [b for b in report.budgets if b.budget == 8e8]
    assert top.limit == "the family has no larger model than N=82,752 (raise family.max_layers)"


def test_a_minimum_at_the_small_edge_is_extended_within_the_family_then_with_narrower_heads(tmp_path):
    study, _, results, report = extended(tmp_path, smaller_is_better)
    # 2e8 and 4e8 start at 5,240, the family's smallest: one head 6 wide, then 4 wide; 8e8 starts at 6,112 and
    # takes the family's 5,240 first (the family's own shapes come first), then the 6-wide one
    assert added(report) == {2e8: [3786, 2428], 4e8: [3786, 2428], 8e8: [5240, 3786]}
    assert [b.limit for b in report.budgets] == ["the cap of 2 added size(s) per budget "
                                                 "(edges.max_points_per_budget) is reached"] * 3
    narrow = "one head of width {}, narrower than family.head_dim=8"
    assert report.budgets[0].line() == (
        f"C=2e+08: its best loss (4.8564) is at its smallest size, N=5,240; added N=3,786 ({narrow.format(6)}), "
        f"N=2,428 ({narrow.format(4)}); still at an edge: the cap of 2 added size(s) per budget "
        "(edges.max_points_per_budget) is reached")
    assert report.budgets[2].line().split("; ")[1] == f"added N=5,240, N=3,786 ({narrow.format(6)})"
    assert [(a["d_model"], a["n_heads"], a["narrower_head"]) for a in report.as_dict()["budgets"][2]["added"]] \
        == [(8, 1, False), (6, 1, True)]
    assert report.tag() == ("extended 2e+08 (+2, 2 with a narrower head), 4e+08 (+2, 2 with a narrower head), "
                            "8e+08 (+2, 1 with a narrower head); still at an edge 2e+08, 4e+08, 8e+08")
    for b in report.budgets:
        for r in b.added:
            g = r.point.grid
            assert g.steps >= study.config.min_steps and abs(g.flops / g.budget - 1) < 0.1  # trained by the rules
            assert r.point.overrides["model.d_model"] == g.model["d_model"] and r.point.label.endswith("-edge")
    _, _, _, small_corpus = extended(tmp_path, smaller_is_better, corpus_tokens=5000)
    assert added(small_corpus) == {2e8: [3786, 2428], 4e8: [3786], 8e8: []}
    assert small_corpus.budgets[1].limit == ("the next smaller model, N=2,428, would read 27,520 tokens, 5.5 epochs "
                                             "of the corpus's 5,000 training tokens (more than 4)")
    assert small_corpus.budgets[2].limit == ("the next smaller model, N=5,240, would read 25,472 tokens, 5.1 epochs "
                                             "of the corpus's 5,000 training tokens (more than 4)")


def test_below_the_family_the_next_smaller_size_has_one_narrower_head(tmp_path):
    study = tiny(tmp_path)
    smallest = next(p for p in build_grid(study) if p.grid.params == 5240).grid.model
    # 5,240 / sqrt(3) = 3,025: 3,786 and 2,428 are nearly as far from it in log N (0.224, 0.220), and the
    # tie-break towards the aspect ratio (12) picks the 6-wide model, as the grid's picker does
    point = next_point(study, 2e8, [5240, 6112, 12016], "small")
    g = point.grid
    assert g.params == NARROW[6] and point.label == "C2e+08-N4K-edge" and point.kind == "grid"
    assert (g.model["d_model"], g.model["n_layers"], g.model["n_heads"], g.model["n_kv_heads"]) == (6, 1, 1, 1)
    assert g.model["d_ff"] == 24  # derived by ModelConfig, 4 x d_model, as for the family's own shapes
    same = {k: v for k, v in g.model.items() if k not in ("d_model", "d_ff")}
    assert same == {k: v for k, v in smallest.items() if k not in ("d_model", "d_ff")}  # depth, heads, base
    assert g.steps == round(2e8 / (6 * 3786) / 128) == 69 and g.tokens == 69 * 128
    assert next_point(study, 2e8, [3786, 5240], "small").grid.params == NARROW[4]
    assert next_point(study, 2e8, [2428, 3786, 5240], "small") == NO_SMALLER


def test_narrower_heads_stop_at_the_minimum_width(tmp_path):
    assert NARROW_MIN_WIDTH == 4
    _, _, _, report = extended(tmp_path, smaller_is_better, edges={"max_points_per_budget": 5})
    assert added(report)[2e8] == [3786, 2428]  # 4 wide is the narrowest: no third size, whatever the cap
    assert report.budgets[0].limit == NO_SMALLER
    assert all(r.point.grid.model["d_model"] >= NARROW_MIN_WIDTH for b in report.budgets for r in b.added)

    def widths(head_dim, **base):
        family = ModelFamily(base={"vocab_size": 512, **base}, head_dim=head_dim)
        return [cfg.d_model for cfg, _, _ in narrow_shapes(family, count_params, 64)]
    assert widths(64) == list(range(4, 64, 2))  # even widths from 4 up to the family's head
    assert widths(8) == [4, 6] and widths(5) == [4] and widths(4) == []
    assert widths(16, pos_encoding="rope") == [4, 6, 8, 10, 12, 14]
    assert widths(8, n_kv_heads=2) == []  # one head cannot share 2 kv heads
    study = tiny(tmp_path, family={"aspect_ratio": 12, "head_dim": 4, "max_layers": 2, "aspect_tolerance": 2,
                                   "base": {"arch": "gpt", "vocab_size": 512, "max_seq_len": 32}})
    smallest = min(p.grid.params for p in build_grid(study))
    assert next_point(study, 2e8, [smallest], "small") == (
        f"the family has no smaller model than N={smallest:,}, one-head models narrower than family.head_dim=4 "
        "included (none is narrower than d_model=4)")


@pytest.mark.parametrize("arch", ["gpt", "bert", "t5"])
@pytest.mark.parametrize("options", [{}, {"pos_encoding": "rope", "activation": "swiglu", "norm": "rmsnorm"},
                                     {"bias": False, "tie_embeddings": False}])
def test_the_narrower_one_head_models_build_and_count_exactly(arch, options):
    family = ModelFamily(base={"arch": arch, "vocab_size": 64, **options}, aspect_ratio=16, head_dim=8)
    shapes = narrow_shapes(family, count_params, 16)
    assert [cfg.d_model for cfg, _, _ in shapes] == [4, 6]
    for cfg, n, _ in shapes:
        assert (cfg.n_layers, cfg.n_heads, cfg.head_dim) == (1, 1, cfg.d_model)
        assert cfg == ModelConfig(**{**family.base, "max_seq_len": 16, "d_model": cfg.d_model, "n_layers": 1,
                                     "n_heads": 1})  # every other field as ModelConfig derives it
        model = build_model(cfg)
        assert n == count_params(cfg).total == sum(p.numel() for p in model.parameters())
        if arch == "gpt":
            ids = torch.randint(0, 64, (2, 16))
            logits = model(ids)
            assert logits.shape == (2, 16, 64) and torch.isfinite(logits).all()


def test_the_grid_never_uses_narrower_heads(tmp_path, repo_root):
    study = tiny(tmp_path)
    assert sorted({p.grid.params for p in build_grid(study)}) == [5240, 6112, 12016, 15296, 20328]
    for name, sizes in [("study_demo.yaml", [6008, 13552, 16832, 22632, 29856, 6008, 13552, 22632, 29856, 45952,
                                             13552, 22632, 45952, 58656, 87360]),
                        ("study_demo_chinchilla_prior.yaml", [6008, 13552, 22632, 29856, 45952, 13552, 22632, 29856,
                                                              58656, 87360, 29856, 45952, 65120, 104560, 151032])]:
        demo = load_study(repo_root / "jobs" / "configs" / name)
        grid = build_grid(demo)
        assert [p.grid.params for p in grid] == sizes  # the grids (and so their point hashes) as before
        head_dim = family_of(demo).head_dim
        assert all(p.grid.model["d_model"] == p.grid.model["n_heads"] * head_dim for p in grid)


def test_an_interior_minimum_adds_nothing(tmp_path):
    study = tiny(tmp_path)
    grid = build_grid(study)
    middle = {b: sorted(p.grid.params for p in grid if p.grid.budget == b)[1] for b in study.config.budgets}
    train = Trainer(lambda n, c: 3.0 + (math.log(n) - math.log(middle[c])) ** 2)
    results, report = extend_edges(study, train(build_grid(study)), train, log=lambda line: None)
    assert report.budgets == [] and len(results) == 9 and len(train.calls) == 1
    assert report.summary() == ["edges: every budget's minimum lies inside its sizes"]
    assert report.as_dict() == {"budgets": [], "extended": [], "at_an_edge": []}


def test_a_minimum_moved_inside_stops_the_extension(tmp_path):
    # the loss is a parabola in log N with its minimum at N=20,000 at every budget: at 4e8 the grid ends at
    # 15,296 (its best); 27,552, added, brackets the minimum, which then lies inside
    _, train, _, report = extended(tmp_path, lambda n, c: 3.0 + (math.log(n) - math.log(20_000)) ** 2)
    (four,) = [b for b in report.budgets if b.budget == 4e8]
    assert [r.point.grid.params for r in four.added] == [27552] and four.now is None and four.limit is None
    assert four.line().endswith("added N=27,552: its minimum is now inside its sizes")
    assert report.as_dict()["budgets"][[b.budget for b in report.budgets].index(4e8)]["inside_now"] is True


def test_extension_off_reports_the_edges_and_trains_nothing_more(tmp_path):
    _, train, results, report = extended(tmp_path, bigger_is_better, edges={"extend": False})
    assert len(train.calls) == 1 and len(results) == 9 and len(report.budgets) == 3
    assert all(b.limit == "edge extension is off (edges.extend: false)" and not b.added for b in report.budgets)


def test_the_next_size_continues_the_grid_spacing_beyond_every_size_trained(tmp_path):
    study = tiny(tmp_path)
    point = next_point(study, 8e8, [6112, 12016, 20328], "large")
    assert point.grid.params == 42880  # nearest 20,328 x sqrt(3) = 35,209 among larger models (27,552 is farther)
    assert point.label == "C8e+08-N43K-edge" and point.kind == "grid"
    assert point.grid.steps == round(8e8 / (6 * 42880) / 128) == 24 and point.grid.tokens == 24 * 128  # D = C / 6N
    assert next_point(study, 8e8, [6112, 12016, 20328, 27552], "large").grid.params == 42880
    assert next_point(study, 8e8, [5240, 6112], "small").grid.params == NARROW[6]  # below the family: narrower


# the plan


def test_the_plan_warns_where_the_prior_optimum_sits_near_an_edge_the_family_clipped(tmp_path):
    study = tiny(tmp_path)
    (warning,) = prior_warnings(study, build_grid(study))  # 2e8: prior optimum sqrt(2e8 / 6) = 5,774
    assert warning == ("warning: at C=2e+08 the prior's optimum, N=5,774, is 0.2 grid steps above its smallest size, "
                       "N=5,240: if the minimum lands there, the study adds up to 2 smaller size(s) there "
                       "(edges.max_points_per_budget), first N=3,786 (one head of width 6, narrower than "
                       "family.head_dim=8)")
    off = tiny(tmp_path, edges={"extend": False})
    (cannot,) = prior_warnings(off, build_grid(off))
    assert cannot.endswith("the study cannot extend it: edge extension is off (edges.extend: false); another prior "
                           "(prior.tokens_per_param, prior.law) moves the grid")
    centred = tiny(tmp_path, budgets=[4e8, 8e8, 1.6e9])
    assert prior_warnings(centred, build_grid(centred)) == []


# the report, and raylm study show


def test_show_finds_the_added_sizes_in_the_record_and_reports_them(tmp_path):
    study = tiny(tmp_path)
    directory = tmp_path / "studies" / "tiny-0123456789ab"
    directory.mkdir(parents=True)
    save_study(study, directory)
    record = StudyRecord(directory)

    def train(points):  # as the driver trains: into the record, results read back from it
        for p in points:
            record_point(record, p, f"key-{p.label}")
        recorded = {r.label: r for r in record.points().values()}
        return [recorded_result(p, recorded[p.label], reused=False) for p in points]

    results, report = extend_edges(study, train(build_grid(study)), train, log=lambda line: None)
    assert report.extended, "the law's optimum lies below the tiny grid's sizes at 8e8 (prior: 1 token/param)"
    shown = show_study(directory, log=lambda *_: None)
    assert sorted(r.point.label for r in shown.results) == sorted(r.point.label for r in results)
    assert shown.edges.as_dict() == report.as_dict()
    fit = json.loads((directory / "show" / "fit.json").read_text())
    assert fit["edges"]["extended"] == [b.budget for b in report.extended]
    text = outcome_summary(shown)
    assert all(b.line() in text for b in report.budgets)
    description = study_description(shown, "tiny", [])  # the parent run's Description
    assert f"and {sum(len(b.added) for b in report.budgets)} added at edges" in description
    assert "**Edges:**" in description and all(f"- {b.line()}" in description for b in report.budgets)
    assert description.count("(added at an edge)") == sum(len(b.added) for b in report.budgets)


def test_the_edges_section_is_checked(tmp_path):
    with pytest.raises(UserError, match="max_points_per_budget"):
        load_study(write_study(tmp_path, edges={"max_points_per_budget": -1}))
    with pytest.raises(UserError, match="extent"):
        load_study(write_study(tmp_path, edges={"extent": True}))


# the same sizes, trained beside the grid (raylm.study.edges_beside)


def _beside(study, loss, at_once: int = 2, known=lambda point: None, corpus_tokens=None):
    """Drive the grid's searcher as Tune does, ``at_once`` trials at a time, each finishing with ``loss(N, C)``;
    the labels it handed out, in order, and the searcher."""
    from ray.tune.search import Searcher

    from raylm.study.edges_beside import EdgesBeside
    from raylm.tune.trial import POINT_KEY

    grid = build_grid(study)
    pending = [p for p in grid if known(p) is None]
    searcher = EdgesBeside(study, grid, pending, known, lambda p: {"tags": {"run_name": p.label}}, corpus_tokens)
    by_label = {p.label: p for p in grid}
    running, handed, serial = [], [], 0
    while True:
        while len(running) < at_once:
            serial += 1
            suggestion = searcher.suggest(f"t{serial}")
            if suggestion is None or suggestion is Searcher.FINISHED:
                break
            label = suggestion[POINT_KEY]["tags"]["run_name"]
            handed.append(label)
            running.append((f"t{serial}", label))
        if not running:
            assert searcher.suggest("last") is Searcher.FINISHED
            return handed, searcher
        trial, label = running.pop(0)
        point = by_label.get(label) or next(p for p in searcher.added if p.label == label)
        searcher.on_trial_complete(trial, {"val/loss": loss(point.grid.params, point.grid.budget),
                                           "step": point.grid.steps})


@pytest.mark.parametrize("loss", [bigger_is_better, smaller_is_better,
                                  lambda n, c: 3.0 + (math.log(n) - math.log(20_000)) ** 2])
def test_beside_the_grid_the_same_sizes_are_added_as_in_rounds_after_it(tmp_path, loss):
    study, _, _, report = extended(tmp_path, loss)
    in_rounds = {b.budget: [r.point.label for r in b.added] for b in report.budgets}
    for at_once in (1, 2, 3):
        handed, searcher = _beside(study, loss, at_once)
        beside = {}
        for p in searcher.added:
            beside.setdefault(p.grid.budget, []).append(p.label)
        assert beside == {b: labels for b, labels in in_rounds.items() if labels}, at_once
        grid = [p.label for p in build_grid(study)]
        assert sorted(handed) == sorted(grid + [p.label for p in searcher.added])  # each point handed out once


def test_beside_the_grid_an_added_size_starts_before_the_rest_of_the_grid(tmp_path):
    study = tiny(tmp_path)
    handed, searcher = _beside(study, smaller_is_better, at_once=2)
    first_added = handed.index(searcher.added[0].label)
    assert first_added < len(build_grid(study))  # queued ahead of grid points still waiting
    assert searcher.added[0].grid.budget == min(study.config.budgets)  # the first budget done is the first extended


def test_beside_the_grid_points_finished_before_are_not_trained_again(tmp_path):
    study = tiny(tmp_path)
    grid = build_grid(study)
    losses = {p.label: smaller_is_better(p.grid.params, p.grid.budget) for p in grid}
    _, first = _beside(study, smaller_is_better)
    losses.update({p.label: smaller_is_better(p.grid.params, p.grid.budget) for p in first.added})
    handed, again = _beside(study, smaller_is_better, known=lambda p: losses.get(p.label))
    assert handed == []  # a rerun: every grid point and every added size is in the record
    assert [p.label for p in again.added] == [p.label for p in first.added]


def test_beside_the_grid_an_added_size_that_fails_stops_its_budget_as_the_rounds_do(tmp_path):
    from ray.tune.search import Searcher

    from raylm.study.edges_beside import EdgesBeside
    from raylm.tune.trial import POINT_KEY

    study = tiny(tmp_path)
    grid = build_grid(study)
    smallest = min(study.config.budgets)
    mine = [p for p in grid if p.grid.budget == smallest]
    searcher = EdgesBeside(study, mine, mine, lambda p: None, lambda p: {"tags": {"run_name": p.label}}, None)
    for serial, point in enumerate(mine):
        assert searcher.suggest(f"t{serial}")[POINT_KEY]["tags"]["run_name"] == point.label
    for serial, point in enumerate(mine):
        searcher.on_trial_complete(f"t{serial}", {"val/loss": smaller_is_better(point.grid.params, smallest),
                                                  "step": point.grid.steps})
    (added,) = searcher.added
    assert searcher.suggest("edge")[POINT_KEY]["tags"]["run_name"] == added.label
    searcher.on_trial_complete("edge", None, error=True)
    assert searcher.suggest("next") is Searcher.FINISHED and len(searcher.added) == 1
