"""A team tracking server: ``mlflow server`` on PostgreSQL with its artifacts on S3 (moto's S3 server),
started as docs/tracking.md says, and a whole training run logged through it over HTTP."""

from __future__ import annotations

import pytest

from raylm.config import RunConfig
from raylm.tracking.ui_server import ServerProcess, start_ui
from raylm.train.run import run_training
from tests.ray.train_helpers import tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_training_run_is_logged_through_a_postgres_and_s3_server(tmp_path, ray_local, postgres_server, s3_server):
    from mlflow.tracking import MlflowClient
    from sqlalchemy import create_engine, text

    bucket = s3_server.create_bucket("raylm-team-mlflow")
    database = postgres_server.create_database("mlflow_team")
    # the server alone holds the S3 credentials: clients upload artifacts through it (mlflow-artifacts:/)
    process = ServerProcess(env=s3_server.env(), log_path=tmp_path / "mlflow-server.log")
    with start_ui(database, artifacts=f"s3://{bucket}/mlflow", process=process) as server:
        data = tiny_config(tmp_path).to_dict()
        data["tracking"]["tracking_uri"] = server.url
        result = run_training(RunConfig.from_dict(data))
        assert result.tracking_uri == server.url
        client = MlflowClient(server.url)
        run = client.get_run(result.mlflow_run_id)
        losses = client.get_metric_history(run.info.run_id, "train/loss")
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    log = (tmp_path / "mlflow-server.log").read_text()[-3000:]

    assert run.info.status == "FINISHED", log
    assert sorted(m.step for m in losses) == [1, 2, 3, 4]
    assert run.data.params["model.d_model"] == "32" and run.data.params["parallel.num_workers"] == "2"
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    assert "config.yaml" in artifacts
    keys = s3_server.list_keys(bucket, "mlflow/")
    assert any(key.endswith(f"{run.info.run_id}/artifacts/config.yaml") for key in keys), keys
    # the run lives in PostgreSQL (not in a SQLite file somewhere)
    engine = create_engine(database)
    with engine.connect() as connection:
        status = connection.execute(text("SELECT status FROM runs WHERE run_uuid = :id"),
                                    {"id": run.info.run_id}).scalar_one()
    engine.dispose()
    assert status == "FINISHED"
