"""``raylm study show DIR``: a study's summary, fits, plots and recommended configs again, from its
directory alone: nothing trains, no Ray, no tracking store.

A study's directory holds what this needs: ``study.yaml`` (the study as it ran, written when it
starts) and ``points.jsonl`` (every evaluation and ending, :mod:`raylm.study.record`). Points are
matched to the grid by their labels (a directory belongs to one grid: its name is the grid's hash); the sizes the
study added at its budgets' edges are found again by repeating the extension on the recorded losses
(:func:`raylm.study.edges.extend_edges`, the corpus left unchecked: a size the study refused is reported as not
in the record).
Fit settings can differ from the run's (``level``, ``simulations``, ``seed``), and ``predictor``
names the prediction to recommend instead of the backtest's choice. Plots, ``fit.json`` and the
``recommended_<target>.yaml`` files go to ``out`` (default ``DIR/show``), so the study's own
outputs stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from raylm.errors import UserError
from raylm.study.analysis import fit_results, headline_metrics, usable_points
from raylm.study.answers import write_answers
from raylm.study.config import Study, load_study
from raylm.study.edges import extend_edges
from raylm.study.grid import StudyPoint, build_grid, verification_point
from raylm.study.publish import write_fit_and_plots
from raylm.study.record import StudyRecord
from raylm.study.results import PointResult, StudyOutcome, recorded_result

STUDY_FILE = "study.yaml"


def save_study(study: Study, directory: Path) -> Path:
    """The study as it runs, with its base run inline (paths absolute), for ``raylm study show``."""
    data = study.config.model_dump(mode="json")
    data["base"] = study.base
    path = directory / STUDY_FILE
    path.write_text(f"# the study as it ran ({study.source}); raylm study show {directory}\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass(frozen=True)
class ShowSettings:
    level: float | None = None
    simulations: int | None = None
    seed: int | None = None
    predictor: str | None = None
    out: Path | None = None


def show_study(directory: str | Path, settings: ShowSettings = ShowSettings(), log=print) -> StudyOutcome:
    """Refit the study in ``directory`` from its record and write its outputs to ``settings.out``."""
    directory = Path(directory).resolve()
    study = _saved_study(directory, settings)
    recorded = {p.label: p for p in StudyRecord(directory).points().values()}
    results, edges = extend_edges(study, _grid_results(study, directory, recorded),
                                  lambda points: [_result(p, recorded[p.label]) for p in points if p.label in recorded],
                                  log=lambda line: None)  # the summary reports them
    fit, recommendation = fit_results(study, usable_points(results, log))
    recommended = _chosen(fit, settings.predictor)
    top = recommended[0]
    checked = verification_point(study, top["budget"], top["n_opt"])  # the run that verifies this allocation
    verify = [_result(checked, recorded[checked.label])] if checked.label in recorded else []
    if study.config.verify.enabled and not verify:
        log(f"note: the record holds no verification run of {checked.label} (the study verified another "
            "allocation, or has not verified yet)")
    out = Path(settings.out).resolve() if settings.out else directory / "show"
    out.mkdir(parents=True, exist_ok=True)
    outcome = StudyOutcome(directory, results, fit, recommended, verify, headline_metrics(fit, recommended, verify),
                           None, None, "", None, recommendation, write_answers(study, recommended, out), edges)
    write_fit_and_plots(outcome, study, out, log)
    return outcome


def _saved_study(directory: Path, settings: ShowSettings) -> Study:
    path = directory / STUDY_FILE
    if not (directory / "points.jsonl").is_file():
        raise UserError(f"{directory} is not a study directory (no points.jsonl); give the directory a study printed "
                        "as 'results in ...'")
    if not path.is_file():
        raise UserError(f"{directory} has no {STUDY_FILE}: it was written by an older raylm. Run the study again "
                        "(raylm study --config FILE reuses every finished point) to write it")
    study = load_study(path)
    fit = {k: v for k, v in (("level", settings.level), ("simulations", settings.simulations),
                             ("seed", settings.seed)) if v is not None}
    if fit:
        config = study.config.model_copy(update={"fit": study.config.fit.model_copy(update=fit)})
        study = Study(config, study.base, study.source)
    return study


def _grid_results(study: Study, directory: Path, recorded: dict) -> list[PointResult]:
    """The grid's results from the record, matched by label."""
    grid = [_result(p, recorded.get(p.label)) for p in build_grid(study)]
    if not any(r.loss is not None for r in grid):
        raise UserError(f"the record in {directory} holds no finished grid point")
    return grid


def _result(point: StudyPoint, recorded) -> PointResult:
    if recorded is None:
        return PointResult(point, "", "MISSING", None, None)
    return recorded_result(point, recorded, reused=True, unfinished=recorded.status or "UNFINISHED")


def _chosen(fit: dict, predictor: str | None) -> list[dict]:
    if predictor is None:
        return fit["recommended"]
    available = fit.get("predictions", {})
    if predictor not in available:
        why = (fit.get("unavailable") or {}).get(predictor)
        raise UserError(f"predictor {predictor!r} " + (f"is unavailable here: {why}" if why else "is unknown")
                        + f"; choose one of {', '.join(sorted(available))}")
    return available[predictor]

