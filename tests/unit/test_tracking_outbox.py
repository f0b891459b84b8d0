"""Nothing lost: a real `mlflow server` stopped and started again under a run that keeps logging.

The records the store did not take wait in the run's outbox on disk and are delivered in order,
each metric point once, when the server answers again, or later by `raylm tracking replay`.
"""

from __future__ import annotations

import json

import pytest

from raylm.cli import main
from raylm.config import TrackingConfig
from raylm.tracking.mlflow_run import MlflowRun
from raylm.tracking.outbox import Outbox, outbox_files
from raylm.tracking.ui_server import ServerProcess, free_port, start_ui


class Server:
    """A real `mlflow server` on one SQLite store and one port, stopped and started at will."""

    def __init__(self, tmp_path):
        self.store = f"sqlite:///{tmp_path / 'mlflow.db'}"
        self.port = free_port()
        self.log = tmp_path / "server.log"
        self.process = None
        self.running = False

    def start(self):
        self.process = start_ui(self.store, port=self.port, process=ServerProcess(log_path=self.log, timeout=120))
        self.running = True

    def stop(self):
        self.process.stop()
        self.running = False

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One server for the module (each start costs seconds); every test logs its own run."""
    server = Server(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    if server.running:
        server.stop()


@pytest.fixture
def server(shared_server):
    if not shared_server.running:  # a test that failed during its outage left it stopped
        shared_server.start()
    return shared_server


def _run(server, tmp_path) -> MlflowRun:
    tracking = TrackingConfig(tracking_uri=server.uri, experiment="outbox", outbox_dir=str(tmp_path / "outbox"))
    run = MlflowRun.start(tracking, "through-an-outage")
    assert run.enabled and run.run_id
    return run


def _steps(run: MlflowRun, metric: str) -> list[int]:
    return [step for step, _ in run.metric_history(metric)]


def test_a_stopped_server_loses_nothing_and_duplicates_nothing(server, tmp_path, capfd):
    run = _run(server, tmp_path)
    run.log_params({"model.d_model": 64})
    for step in range(1, 6):
        run.log_metrics({"train/loss": 1.0 / step}, step)
    server.stop()
    for step in range(6, 11):  # the server is down: these wait on disk, in order
        run.log_metrics({"train/loss": 1.0 / step}, step)
    run.set_tag("phase", "outage")
    assert run.waiting == 6
    assert run.last_step("train/loss") == 10  # a restarted worker would skip what waits, too
    (path,) = outbox_files(tmp_path / "outbox")
    assert len(Outbox.open(path).pending) == 6  # durable: another process reads the same records
    assert "went away" in capfd.readouterr().err
    server.start()
    for step in range(11, 13):
        run.log_metrics({"train/loss": 1.0 / step}, step)
    assert run.drain(wait_s=60) == 0
    run.finish("FINISHED")
    assert _steps(run, "train/loss") == list(range(1, 13))  # every point once
    assert run.status() == "FINISHED"
    assert run.client.get_run(run.run_id).data.tags["phase"] == "outage"
    assert not outbox_files(tmp_path / "outbox")  # delivered: nothing left on disk
    assert "answers again" in capfd.readouterr().err


def test_a_record_delivered_twice_is_stored_once(server, tmp_path):
    run = _run(server, tmp_path)
    record = [{"val/loss": 2.5}, 7, 1_700_000_000_000]
    run.deliver("log_metrics", record)
    run.deliver("log_metrics", record)  # the answer to the first was lost; the batch is sent again
    assert run.metric_history("val/loss") == [(7, 2.5)]


def test_a_dataset_input_delivered_twice_is_stored_once(server, tmp_path):
    run = _run(server, tmp_path)
    record = ["tokens/0123abcd", "0123abcd", "/data/tokens/0123abcd", "training"]
    run.deliver("log_input", record)
    run.deliver("log_input", record)  # resent after a lost answer
    (shards,) = run.client.get_run(run.run_id).inputs.dataset_inputs
    assert (shards.dataset.name, shards.dataset.digest, shards.dataset.source_type) == \
        ("tokens/0123abcd", "0123abcd", "local")
    assert json.loads(shards.dataset.source)["uri"] == "/data/tokens/0123abcd"
    assert [(t.key, t.value) for t in shards.tags] == [("mlflow.data.context", "training")]


def test_a_logged_model_delivered_twice_is_one_model_with_its_files(server, tmp_path):
    run = _run(server, tmp_path)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model_config.yaml").write_text("arch: gpt\n")
    (model_dir / "model.safetensors").write_bytes(b"weights")
    run.log_model(str(model_dir), "verify-C2.4e+09-N5K", 12)  # a name MLflow would refuse as it is
    run.deliver("log_model", [str(model_dir), "verify-C2_4e+09-N5K", 12])  # resent after a lost answer
    client = run.client
    (output,) = client.get_run(run.run_id).outputs.model_outputs
    assert output.step == 12
    model = client.get_logged_model(output.model_id)
    assert model.name == "verify-C2_4e+09-N5K" and model.source_run_id == run.run_id and str(model.status) == "READY"
    files = {f.path for f in client.list_logged_model_artifacts(model.model_id)}
    assert files == {"model_config.yaml", "model.safetensors"}
    found = client.search_logged_models([model.experiment_id], filter_string=f"source_run_id = '{run.run_id}'")
    assert len(found) == 1


def test_a_run_that_ends_while_the_store_is_down_is_replayed_later(server, tmp_path, capsys):
    run = _run(server, tmp_path)
    run.log_metrics({"train/loss": 3.0}, 1)
    server.stop()
    run.log_metrics({"train/loss": 2.0}, 2)
    run.finish("FINISHED")  # the end itself waits too
    assert run.drain() == 2
    server.start()
    assert main(["tracking", "replay", str(tmp_path / "outbox")]) == 0
    assert "2 of 2 records delivered; all delivered" in capsys.readouterr().out
    assert _steps(run, "train/loss") == [1, 2]
    assert run.status() == "FINISHED"
    assert main(["tracking", "replay", str(tmp_path / "outbox")]) == 0
    assert "nothing waits" in capsys.readouterr().out


def test_a_refused_record_does_not_hold_back_the_rest(server, tmp_path, capfd):
    run = _run(server, tmp_path)
    run.log_params({"name": "first", "lr": "0.1"})
    run.log_params({"name": "second", "warmup": "10"})  # name cannot change; warmup is new
    run.log_metrics({"train/loss": 1.0}, 1)
    params = run.client.get_run(run.run_id).data.params
    assert params["name"] == "first" and params["warmup"] == "10"
    assert _steps(run, "train/loss") == [1] and run.waiting == 0
    assert "keeps its earlier values of name" in capfd.readouterr().err


def test_a_store_that_does_not_answer_stops_a_run_before_it_starts(tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code = main(["train", "--tracking.tracking_uri", uri, "--output_dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"the tracking store {uri} does not answer" in err and "--tracking.enabled false" in err
    assert not (tmp_path / "runs").exists()  # nothing started
