"""The study's parent run: results.csv, fit.json, the recommended configs, the plots and the headline metrics,
then FINISHED."""

from __future__ import annotations

import json

from raylm.study.config import Study
from raylm.study.description import NOTE_TAG, study_description
from raylm.study.plots import write_study_plots
from raylm.study.results import StudyOutcome, write_results_csv


def log_parent(outcome: StudyOutcome, parent, study: Study, log=print) -> None:
    """Write results.csv, fit.json and the plots into the study directory, log them and the metrics, finish."""
    directory = outcome.directory
    write_results_csv(outcome, directory / "results.csv")
    fit_json = dict(outcome.fit)
    fit_json["verification"] = {k: v for k, v in outcome.metrics.items() if k.startswith(("verify/", "predicted/"))}
    (directory / "fit.json").write_text(json.dumps(fit_json, indent=2, default=float) + "\n")
    try:
        plots = write_study_plots(directory / "plots", outcome, study)
    except Exception as exc:  # noqa: BLE001 - a figure must never cost the study its numbers
        plots = []
        log(f"warning: the study's plots could not be drawn ({type(exc).__name__}: {exc}); its numbers are in "
            f"{directory / 'results.csv'} and {directory / 'fit.json'}")
    parent.set_tag(NOTE_TAG, study_description(outcome, study.config.name, [f"plots/{p.name}" for p in plots]))
    parent.log_metrics(outcome.metrics, step=0)
    parent.log_artifact(str(directory / "results.csv"))
    parent.log_artifact(str(directory / "fit.json"))
    for path in outcome.answers:
        parent.log_artifact(str(path))
    for path in plots:
        parent.log_artifact(str(path), "plots")
    parent.finish("FINISHED")
