"""A tiny scaling study end to end on the local Ray: grid trials, every fit, the recommended
prediction, the verification run, the MLflow parent; then the same study again trains nothing."""

from __future__ import annotations

import json

import pytest

from raylm.study.config import load_study
from raylm.study.run import run_study
from tests.ray.study_helpers import write_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def study_run(tiny_study):
    return tiny_study


def test_grid_fits_prediction_and_verification(study_run):
    from mlflow.tracking import MlflowClient

    from raylm.data.manifest import read_manifest

    tmp, study, outcome = study_run
    assert len(outcome.results) == 9 and all(r.status == "FINISHED" and r.loss for r in outcome.results)
    assert len(outcome.verify) == 1 and outcome.verify[0].loss is not None
    top = outcome.recommended[0]
    assert top["budget"] == 2.4e9 and top["loss_interval"][0] <= top["loss"] <= top["loss_interval"][1]
    m = outcome.metrics
    assert m["verify/rel_error"] == pytest.approx((m["predicted/loss"] - m["verify/loss"]) / m["verify/loss"])
    client = MlflowClient(outcome.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.tags["raylm.kind"] == "study" and parent.info.status == "FINISHED"
    description = parent.data.tags["mlflow.note.content"]  # the run's Description in the MLflow UI
    assert description.startswith("## Scaling study tiny") and f"**Recommended ({top['approach']}) at C=2.4e+09" \
        in description and "error (predicted - measured) / measured" in description and "plots/isoflops.png" \
        in description
    for key in ("predicted/loss", "predicted/n_opt", "predicted/d_opt", "verify/loss", "verify/rel_error"):
        assert key in parent.data.metrics
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'")
    kinds = sorted(c.data.tags["raylm.kind"] for c in children)
    assert kinds == ["study-point"] * 9 + ["study-verify"]
    point = next(c for c in children if c.data.tags["raylm.kind"] == "study-point")
    for tag in ("raylm.budget", "raylm.params", "raylm.tokens", "raylm.tokens_per_param"):
        assert tag in point.data.tags
    (shards,) = client.get_run(point.info.run_id).inputs.dataset_inputs  # the token shards, as the run's dataset
    (manifest,) = tmp.glob("tokens/**/manifest.json")
    assert shards.dataset.digest == read_manifest(manifest.parent).key and shards.tags[0].value == "training"
    verify = next(c for c in children if c.data.tags["raylm.kind"] == "study-verify")
    (output,) = client.get_run(verify.info.run_id).outputs.model_outputs  # its Logged models in the UI
    assert "model.safetensors" in {f.path for f in client.list_logged_model_artifacts(output.model_id)}
    outputs = client.get_run(point.info.run_id).outputs
    assert not (outputs and outputs.model_outputs)  # grid points export no model
    steps = int(point.data.params["train.max_steps"])
    val_steps = [h.step for h in client.get_metric_history(point.info.run_id, "val/loss")]
    assert val_steps[-1] == steps and len(val_steps) >= 3  # evaluations along the run, the last at its end
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "fit.json", "plots"} <= artifacts
    plots = {a.path.split("/")[-1] for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"isoflops.png", "optimal_allocation.png", "frontier.png", "approach1_envelope.png"} <= plots
    fit = json.loads((outcome.directory / "fit.json").read_text())
    assert fit["recommended"][0]["approach"] == top["approach"]


def test_running_the_study_again_trains_nothing_and_duplicates_no_run(study_run):
    from mlflow.tracking import MlflowClient

    tmp, study, first = study_run
    again = run_study(load_study(write_study(tmp)), log=print)
    assert all(r.reused for r in again.results + again.verify)
    assert again.parent_run_id == first.parent_run_id
    client = MlflowClient(first.tracking_uri)
    experiment = client.get_experiment_by_name("studies")
    assert len(client.search_runs([experiment.experiment_id])) == 1 + 9 + 1
    assert again.metrics["predicted/loss"] == pytest.approx(first.metrics["predicted/loss"])


def test_the_study_record_holds_the_numbers_and_rebuilds_an_empty_store(study_run, tmp_path):
    """The study directory's record, not MLflow, is the truth: run again with a new, empty tracking store
    and with changed analysis settings, the study trains nothing, re-creates every run from its record,
    and its parent keeps the grid's params while the analysis settings change as tags."""
    from mlflow.tracking import MlflowClient

    from raylm.study.record import StudyRecord

    tmp, study, first = study_run
    recorded = StudyRecord(first.directory).points()
    for result in first.results + first.verify:
        point = recorded[result.key]
        assert point.status == "FINISHED"
        assert point.final(result.point.grid.steps) == pytest.approx(result.loss)
        assert len(point.curve()) == len(result.curve) >= 2
    store = f"sqlite:///{tmp_path / 'fresh.db'}"
    again = run_study(load_study(write_study(tmp, fit={"simulations": 20, "level": 0.8}),
                                 [("tracking.tracking_uri", store)]), log=print)
    assert all(r.reused for r in again.results + again.verify)
    assert [r.loss for r in again.results] == pytest.approx([r.loss for r in first.results])
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("studies")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 + 9 + 1 and {r.info.status for r in runs} == {"FINISHED"}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == again.parent_run_id]
    assert len(children) == 10
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/loss")]
        assert steps == sorted(set(steps)) and steps  # every evaluation, once
    parent = client.get_run(again.parent_run_id)
    assert parent.data.tags["raylm.study.fit.level"] == "0.8"
    assert "study.fit.level" not in parent.data.params and "study.budgets" in parent.data.params


def test_a_study_killed_mid_point_finishes_every_point_as_if_never_stopped(study_run, tmp_path, ray_local):
    """The driver (a `raylm study` process on the same Ray) is killed with SIGKILL after some points finished
    and while another is between checkpoints; run again, the study continues that point from its newest
    checkpoint, ends every point FINISHED with the uninterrupted study's losses, one run per point, none
    left RUNNING."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml
    from mlflow.tracking import MlflowClient

    from raylm.study.record import StudyRecord

    _, _, uninterrupted = study_run
    path = write_study(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["base"]["faults"] = {"step_delay_s": 0.15}  # slow steps: the kill lands inside a point
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "raylm.cli", "study", "run", str(path)], cwd=tmp_path,
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    interrupted = None
    try:
        deadline = time.time() + 900
        while time.time() < deadline and driver.poll() is None and interrupted is None:
            time.sleep(0.5)
            records = [StudyRecord(d).points() for d in tmp_path.glob("studies/tiny-*")]
            points = records[0] if records else {}
            finished = [p for p in points.values() if p.status == "FINISHED"]
            midway = [p for p in points.values() if p.status is None and p.evals]
            if len(finished) >= 2 and midway:
                interrupted = midway[0]
        if interrupted is None:
            pytest.fail(f"the study never had a point half done after two finished:\n"
                        f"{(tmp_path / 'driver.log').read_text()[-3000:]}")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    # run again at full speed: a step delay is not part of a point's hash, so these are the same points
    outcome = run_study(load_study(path, [("faults.step_delay_s", "0")]), log=print)
    assert [r.status for r in outcome.results] == ["FINISHED"] * 9
    expected = {r.point.label: r.loss for r in uninterrupted.results}
    assert {r.point.label: r.loss for r in outcome.results} == pytest.approx(expected, rel=1e-5)
    assert len(outcome.recommendation.point.data) == 9  # every point in the fit
    client = MlflowClient(outcome.tracking_uri)
    experiment = client.get_experiment_by_name("studies")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"}  # none left RUNNING
    keys = [r.data.tags.get("raylm.point_key") for r in runs if r.info.run_id != outcome.parent_run_id]
    assert len(keys) == len(set(keys)) == 10  # one run per point (9 + the verification)
    resumed = [r for r in runs if r.data.tags.get("raylm.point_key") == interrupted.key]
    assert int(resumed[0].data.tags["raylm.resumed_from_step"]) >= min(interrupted.evals)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert steps == sorted(set(steps))  # no metric point twice


def test_a_study_with_a_new_target_through_a_tracking_outage(study_run, tmp_path):
    """The same grid against a real `mlflow server`, with a new target: the grid's points come from the
    study's record (re-created in the server's empty store), the new target's verification run trains
    while the server is stopped for 12 s, and every run ends FINISHED with each metric point once."""
    import threading
    import time

    from mlflow.tracking import MlflowClient

    from raylm.tracking.ui_server import ServerProcess, free_port, start_ui

    tmp, _, first = study_run
    store, port = f"sqlite:///{tmp_path / 'server.db'}", free_port()
    process = ServerProcess(log_path=tmp_path / "server.log", timeout=120)
    server = {"ui": start_ui(store, port=port, process=process)}
    uri = f"http://127.0.0.1:{port}"
    events: list[str] = []

    def verification_steps() -> int:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("studies")
        runs = client.search_runs([experiment.experiment_id], "tags.`raylm.point_kind` = 'verify'") \
            if experiment else []
        return max((len(client.get_metric_history(r.info.run_id, "train/loss")) for r in runs), default=0)

    def outage():
        deadline = time.time() + 900
        while time.time() < deadline:
            try:
                if verification_steps() >= 2:
                    break
            except Exception:  # noqa: BLE001 - the store may be busy
                pass
            time.sleep(0.5)
        server["ui"].stop()
        events.append("stopped")
        time.sleep(12)
        server["ui"] = start_ui(store, port=port, process=process)
        events.append("started")

    thread = threading.Thread(target=outage, daemon=True)
    thread.start()
    try:
        study = load_study(write_study(tmp, targets=[4.8e9]),
                           [("tracking.tracking_uri", uri), ("tracking.outbox_dir", str(tmp_path / "outbox")),
                            ("faults.step_delay_s", "0.03")])  # ~35 s of verification: the outage falls inside it
        outcome = run_study(study, log=print)
        thread.join(timeout=300)
        assert events == ["stopped", "started"]
        assert all(r.reused for r in outcome.results) and not any(r.reused for r in outcome.verify)
        assert outcome.recommended[0]["budget"] == 4.8e9 != first.recommended[0]["budget"]
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("studies").experiment_id])
        assert len(runs) == 1 + 9 + 1 and {r.info.status for r in runs} == {"FINISHED"}
        (verify,) = [r for r in runs if r.data.tags.get("raylm.point_kind") == "verify"]
        last, every = outcome.verify[0].point.grid.steps, study.base_config.train.log_every
        steps = sorted(m.step for m in client.get_metric_history(verify.info.run_id, "train/loss"))
        assert steps == sorted({1, last} | set(range(every, last + 1, every)))  # 0 missing, 0 duplicated
        assert not list((tmp_path / "outbox").glob("*.jsonl"))
    finally:
        server["ui"].stop()


def test_the_recommended_config_is_the_verification_run_and_trains_as_it_is(study_run, tmp_path):
    """recommended_<target>.yaml is a complete run config: the verification run's (the same model, tokens
    and schedule), logged on the parent, and `raylm train --config` takes it as it is."""
    import yaml
    from mlflow.tracking import MlflowClient

    from raylm.config import RunConfig
    from raylm.study.grid import point_config
    from raylm.train.run import run_training

    _, study, outcome = study_run
    (path,) = outcome.answers
    assert path.name == "recommended_2.4e+09.yaml" and path.parent == outcome.directory
    header = path.read_text().splitlines()[:3]
    assert header[2] == f"# train it: raylm train --config {path}"
    answer = RunConfig.from_dict(yaml.safe_load(path.read_text()), str(path))
    verified = point_config(study, outcome.verify[0].point)
    assert answer.model == verified.model and answer.train == verified.train and answer.data == verified.data
    assert answer.train.export_model
    artifacts = {a.path for a in MlflowClient(outcome.tracking_uri).list_artifacts(outcome.parent_run_id)}
    assert path.name in artifacts
    short = answer.model_copy(update={"output_dir": str(tmp_path / "runs"), "train": answer.train.model_copy(
        update={"max_steps": 3, "eval_every": 3, "checkpoint_every": 3, "log_every": 1})})
    result = run_training(short)
    assert result.metrics["step"] == 3 and (tmp_path / "runs").is_dir()
