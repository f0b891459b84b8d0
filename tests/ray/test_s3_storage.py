"""Training with ``output_dir`` and ``data.shards_dir`` on ``s3://``, against a real S3 API (moto's
server on 127.0.0.1; the ``ray_local`` fixture forwards its endpoint and credentials to the workers).

Two TorchTrainer runs: an uninterrupted one (its checkpoints, exported model and token shards must be
in the bucket, its losses those of the single-process reference reading the same shards from S3), and
one resumed from the first run's ``s3://.../step_00000002`` checkpoint, whose steps 3 and 4 must
repeat the uninterrupted run's. Tolerance as in ``test_train.py``: 1e-5 relative (fp32; only the
order of the all-reduce sums differs).
"""

from __future__ import annotations

import pytest

from raylm import storage
from raylm.config import RunConfig
from raylm.train.run import run_training
from tests.ray.train_helpers import logged_curve, reference_losses, tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RTOL = 1e-5
BUCKET = "raylm-storage-test"


def s3_config(tmp, bucket: str) -> RunConfig:
    """The tiny ZeRO-2 run of the training tests, checkpointing every 2 steps, storing everything in ``bucket``."""
    data = tiny_config(tmp, parallel={"zero_stage": 2}, train={"checkpoint_every": 2}).to_dict()
    data["output_dir"] = f"s3://{bucket}/runs"
    data["data"]["shards_dir"] = f"s3://{bucket}/tokens"
    return RunConfig.from_dict(data)


@pytest.fixture(scope="module")
def bucket(ray_local, s3_server) -> str:
    return s3_server.create_bucket(BUCKET)


@pytest.fixture(scope="module")
def s3_run(tmp_path_factory, bucket):
    return run_training(s3_config(tmp_path_factory.mktemp("s3"), bucket))


def _param(result, name: str) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(result.tracking_uri).get_run(result.mlflow_run_id).data.params[name]


def test_checkpoints_model_and_shards_land_in_the_bucket(s3_run, s3_server, bucket, tmp_path):
    run_dir = f"s3://{bucket}/runs/{s3_run.run_name}"
    assert s3_run.storage_dir == run_dir and s3_run.model_dir == f"{run_dir}/model"
    assert s3_run.checkpoint_path == f"{run_dir}/step_00000004"
    keys = set(s3_server.list_keys(bucket, f"runs/{s3_run.run_name}/"))
    for step in ("step_00000002", "step_00000004"):
        for rank in (0, 1):
            prefix = f"runs/{s3_run.run_name}/{step}/"
            assert {f"{prefix}rank{rank}.json", f"{prefix}rank{rank}_rng.pt"} <= keys
            assert any(k.startswith(f"{prefix}deepspeed/") and f"zero_pp_rank_{rank}_" in k and
                       k.endswith("optim_states.pt") for k in keys), f"{step}: rank {rank}'s optimizer shard"
    model = f"runs/{s3_run.run_name}/model/"
    assert {f"{model}model.safetensors", f"{model}model_config.yaml", f"{model}tokenizer.json"} <= keys

    dataset = _param(s3_run, "data.directory")
    assert dataset.startswith(f"s3://{bucket}/tokens/")
    key = dataset.rsplit("/", 1)[1]
    tokens = set(s3_server.list_keys(bucket, "tokens/"))
    assert {f"tokens/{key}/manifest.json", f"tokens/{key}/tokenizer.json",
            f"tokens/{key}/train/shard-00000.parquet", f"tokens/{key}/val/shard-00000.parquet"} <= tokens
    assert any(k.startswith("tokens/tokenizers/bpe-") for k in tokens)
    assert not [k for k in tokens | keys if ".raylm-write-probe" in k]

    cfg = s3_config(tmp_path, bucket)
    curve = logged_curve(s3_run)
    assert [curve[s] for s in range(1, 5)] == pytest.approx(reference_losses(cfg, dataset, 4), rel=RTOL)
    from raylm.model.checkpoint import load_model

    loaded, _ = load_model(storage.download_dir(s3_run.model_dir, tmp_path / "model"))
    assert sum(p.numel() for p in loaded.parameters()) > 0


def test_resume_from_an_s3_checkpoint_continues_exactly(s3_run, bucket, tmp_path):
    checkpoint = f"{s3_run.storage_dir}/step_00000002"
    resumed = run_training(s3_config(tmp_path, bucket), resume_from=checkpoint)
    assert resumed.run_name != s3_run.run_name
    assert _param(resumed, "data.directory") == _param(s3_run, "data.directory")  # the shards were reused
    baseline, curve = logged_curve(s3_run), logged_curve(resumed)
    assert sorted(curve) == [3, 4]
    assert [curve[3], curve[4]] == pytest.approx([baseline[3], baseline[4]], rel=RTOL)
    assert resumed.checkpoint_path == f"{resumed.storage_dir}/step_00000004"
