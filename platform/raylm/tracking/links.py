"""Links into the MLflow UI that open the runs view (MLflow 3 opens experiments on a GenAI page
unless the link carries ``workflowType=machine_learning``)."""

from __future__ import annotations

from urllib.parse import quote

DEFAULT_UI = "http://127.0.0.1:5000"  # where `make ui` serves a local SQLite store


def ui_base(tracking_uri: str) -> str:
    """The UI of a tracking server is the server itself; a local store is opened with `make ui`."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else DEFAULT_UI


def runs_link(tracking_uri: str, experiment_id: str, parent_run_id: str | None = None, chart: bool = False) -> str:
    """The experiment's runs table, filtered to the children of ``parent_run_id`` when given."""
    link = f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if parent_run_id:
        link += "&searchFilter=" + quote(f"tags.mlflow.parentRunId = '{parent_run_id}'", safe="")
    if chart:
        link += "&compareRunsMode=CHART"
    return link


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
