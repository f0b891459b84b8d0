"""Links into the MLflow UI that open the runs view (MLflow 3 opens experiments on a GenAI page
unless the link carries ``workflowType=machine_learning``)."""

from __future__ import annotations

from urllib.parse import quote

DEFAULT_UI = "http://127.0.0.1:5000"  # where `make ui` serves a local SQLite store


def ui_base(tracking_uri: str) -> str:
    """The UI of a tracking server is the server itself; a local store is opened with `make ui`."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else DEFAULT_UI


# Sorted by creation time (the UI's default) nested runs stay folded under their parent row, and the
# chart view plots only the parent. Sorted by validation loss they are listed one per row, best first.
NESTED_ORDER = "&orderByKey=" + quote("metrics.`val/loss`", safe="") + "&orderByAsc=true"


def runs_link(tracking_uri: str, experiment_id: str, parent_run_id: str | None = None, chart: bool = False) -> str:
    """The experiment's runs table; with ``parent_run_id``, that run's nested runs, one per row, best
    validation loss first (``chart``: their curves overlaid in the chart view)."""
    link = f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if parent_run_id:
        link += "&searchFilter=" + quote(f"tags.mlflow.parentRunId = '{parent_run_id}'", safe="") + NESTED_ORDER
    if chart:
        link += "&compareRunsMode=CHART"
    return link


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
