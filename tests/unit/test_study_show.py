"""`raylm study show DIR`: a study's summary, fits, plots and recommended configs from its directory alone,
with other fit settings, no training and no tracking store. The record is written as a study's driver
writes it, with losses from a known Chinchilla law."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml
from tests.ray.study_helpers import write_study

from raylm.errors import UserError
from raylm.study.config import load_study
from raylm.study.grid import build_grid, verification_point
from raylm.study.record import StudyRecord
from raylm.study.show import STUDY_FILE, ShowSettings, save_study, show_study
from raylm.study.summary import minima_admit_line, outcome_summary

LAW = {"E": 1.8, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.28}


def law_loss(params: float, tokens: float) -> float:
    return LAW["E"] + LAW["A"] / params ** LAW["alpha"] + LAW["B"] / tokens ** LAW["beta"]


def record_point(record: StudyRecord, point, key: str) -> None:
    """Three evaluations along the run and its end, as the driver records them."""
    g = point.grid
    for fraction in (1 / 3, 2 / 3, 1.0):
        step = max(1, round(g.steps * fraction))
        tokens = step * g.global_batch_size * g.seq_len
        record.add_eval(key, point.label, step, {"val/loss": law_loss(g.params, tokens)})
    record.add_end(key, point.label, "FINISHED")


@pytest.fixture
def study_dir(tmp_path):
    study = load_study(write_study(tmp_path))
    directory = tmp_path / "studies" / "tiny-0123456789ab"
    directory.mkdir(parents=True)
    save_study(study, directory)
    record = StudyRecord(directory)
    for i, point in enumerate(build_grid(study)):
        record_point(record, point, f"key{i}")
    return study, directory


def test_show_refits_from_the_record_alone_and_writes_beside_the_study(study_dir):
    study, directory = study_dir
    shown = show_study(directory, log=lambda *_: None)
    text = outcome_summary(shown)
    assert text.startswith(f"study {directory.name}: 9 grid runs, from its record in {directory}")
    assert "recommended (" in text and "MLflow" not in text and "verification:" not in text
    # one budget's minimum is interior here, so no range is admitted and none is claimed; with one, it is shown
    assert shown.fit["minima_admit"] is None and "alone admit" not in text
    admitted = {"budgets": 3, "low": [2.91], "high": [3.37]}
    with_range = outcome_summary(dataclasses.replace(shown, fit={**shown.fit, "minima_admit": admitted}))
    assert "its 3 IsoFLOP minima alone admit 2.9100-3.3700 there; the narrower interval rests on" in with_range
    assert "the narrower interval" not in minima_admit_line(admitted, [2.5, 3.5])  # the interval claims no more
    assert all(r.loss is not None and r.reused for r in shown.results)
    out = directory / "show"
    assert json.loads((out / "fit.json").read_text())["recommended"][0]["budget"] == 2.4e9
    assert {"isoflops.png", "frontier.png"} <= {p.name for p in (out / "plots").iterdir()}
    (answer,) = shown.answers
    assert answer == out / "recommended_2.4e+09.yaml" and yaml.safe_load(answer.read_text())["train"]["max_steps"]
    assert not (directory / "fit.json").exists()  # the study's own outputs are left alone


def test_show_takes_other_fit_settings_and_a_chosen_predictor(study_dir):
    _, directory = study_dir
    default = show_study(directory, log=lambda *_: None).recommended[0]
    narrow = show_study(directory, ShowSettings(level=0.5, simulations=30), log=lambda *_: None).recommended[0]
    assert narrow["level"] == 0.5
    assert narrow["loss_interval"][1] - narrow["loss_interval"][0] < default["loss_interval"][1] - \
        default["loss_interval"][0]
    chosen = show_study(directory, ShowSettings(predictor="approach3", out=directory / "a3"), log=lambda *_: None)
    assert chosen.recommended[0]["approach"] == "approach3" and (directory / "a3" / "fit.json").is_file()
    with pytest.raises(UserError, match="choose one of"):
        show_study(directory, ShowSettings(predictor="oracle"), log=lambda *_: None)


def test_show_includes_the_verification_run_of_the_shown_allocation(study_dir):
    study, directory = study_dir
    top = show_study(directory, log=lambda *_: None).recommended[0]
    check = verification_point(study, top["budget"], top["n_opt"])
    record_point(StudyRecord(directory), check, "verify-key")
    shown = show_study(directory, log=lambda *_: None)
    measured = law_loss(check.grid.params, check.grid.tokens)
    assert shown.metrics["verify/loss"] == pytest.approx(measured)
    assert shown.metrics["verify/rel_error"] == pytest.approx((top["loss"] - measured) / measured)
    assert "error (predicted - measured) / measured" in outcome_summary(shown)


def test_show_says_what_is_wrong_with_a_directory(tmp_path, study_dir):
    _, directory = study_dir
    with pytest.raises(UserError, match="not a study directory"):
        show_study(tmp_path, log=lambda *_: None)
    (directory / STUDY_FILE).unlink()
    with pytest.raises(UserError, match="older raylm"):
        show_study(directory, log=lambda *_: None)


def test_the_cli_prints_the_summary(study_dir, capsys):
    from raylm.cli import main

    _, directory = study_dir
    assert main(["study", "show", str(directory), "--level", "0.8"]) == 0
    printed = capsys.readouterr().out
    assert "80% interval" in printed and "recommended_2.4e+09.yaml" in printed
    assert main(["study", "show", str(directory), "--train.lr", "1e-3"]) == 2


def test_a_point_outside_its_own_interval_says_why():
    from raylm.study.summary import outside_note

    assert outside_note(3.0037, [3.0214, 3.2849]) == ("; biased low in simulation: the interval corrects for it, "
                                                      "the point does not")
    assert "biased high" in outside_note(3.3, [3.0, 3.2])
    assert outside_note(3.1, [3.0, 3.2]) == "" and outside_note(None, [3.0, 3.2]) == ""
    assert outside_note(3.1, [float("nan"), float("nan")]) == "" and outside_note(3.1, None) == ""
