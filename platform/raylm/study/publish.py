"""The study's parent run: results.csv, fit.json, the recommended configs, the plots and the headline metrics,
then FINISHED."""

from __future__ import annotations

import json
from pathlib import Path

from raylm.study.config import Study
from raylm.study.description import NOTE_TAG, study_description
from raylm.study.edges import EDGES_TAG
from raylm.study.plots import write_study_plots
from raylm.study.results import StudyOutcome, write_results_csv


def write_fit_and_plots(outcome: StudyOutcome, study: Study, directory: Path, log=print) -> list[Path]:
    """``fit.json`` (every fit, the recommended prediction, the verification's numbers) and the plots into
    ``directory``; the plots drawn. A plot that fails is reported, never raised: a figure must never cost the
    study its numbers. ``raylm study`` and ``raylm study show`` both write through here."""
    fit_json = {**outcome.fit, "recommended": outcome.recommended,
                "verification": {k: v for k, v in outcome.metrics.items() if k.startswith(("verify/", "predicted/"))},
                "edges": outcome.edges.as_dict() if outcome.edges is not None else None}
    (directory / "fit.json").write_text(json.dumps(fit_json, indent=2, default=float) + "\n")
    try:
        return write_study_plots(directory / "plots", outcome, study)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        numbers = " and ".join(str(p) for p in (directory / "results.csv", directory / "fit.json") if p.exists())
        log(f"warning: the study's plots could not be drawn ({type(exc).__name__}: {exc}); its numbers are in "
            f"{numbers}")
        return []


def log_parent(outcome: StudyOutcome, parent, study: Study, log=print) -> None:
    """Write results.csv, fit.json and the plots into the study directory, log them and the metrics, finish."""
    directory = outcome.directory
    write_results_csv(outcome, directory / "results.csv")
    plots = write_fit_and_plots(outcome, study, directory, log)
    parent.set_tag(NOTE_TAG, study_description(outcome, study.config.name, [f"plots/{p.name}" for p in plots]))
    if outcome.edges is not None:
        parent.set_tag(EDGES_TAG, outcome.edges.tag())
    parent.log_metrics(outcome.metrics, step=0)
    parent.log_artifact(str(directory / "results.csv"))
    parent.log_artifact(str(directory / "fit.json"))
    for path in outcome.answers:
        parent.log_artifact(str(path))
    for path in plots:
        parent.log_artifact(str(path), "plots")
    parent.finish("FINISHED")
