"""raylm.storage: local paths and URIs through one set of helpers; the S3 cases talk to a real S3 API
(moto's server on 127.0.0.1, the ``s3_server`` session fixture), not a mock."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.unit.test_data_loader import make_dataset

from raylm import storage
from raylm.data.loader import TokenLoader
from raylm.data.manifest import read_manifest
from raylm.errors import ConfigError, UserError


@pytest.fixture
def bucket(s3_server, monkeypatch) -> str:
    """A fresh bucket, with this process configured (credentials, endpoint) as a user's would be."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server.create_bucket(f"raylm-{uuid.uuid4().hex[:12]}")


def test_uris_and_local_paths_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.is_uri("s3://b/x") and storage.is_uri("gs://b/x") and storage.is_uri("S3://b")
    assert not storage.is_uri("runs") and not storage.is_uri("/abs/runs") and not storage.is_uri("file:///abs/runs")
    assert storage.absolute("s3://b/runs/") == "s3://b/runs"
    assert storage.absolute("runs") == str(tmp_path / "runs")
    assert storage.absolute("file:///abs/runs") == "/abs/runs"
    assert storage.join("s3://b/runs/", "r1", "model") == "s3://b/runs/r1/model"
    assert storage.join(tmp_path, "r1", "model") == str(tmp_path / "r1" / "model")
    assert storage.location("s3://b/x") == "s3://b/x" and storage.location("runs") == Path("runs")


def test_local_files_and_directories(tmp_path):
    storage.write_text(storage.join(tmp_path, "run", "step_00000002", "rank0.json"), "{}")
    storage.write_text(storage.join(tmp_path, "run", "step_00000010", "rank0.json"), "{}")
    storage.write_text(storage.join(tmp_path, "run", "step_notes.txt"), "a file, not a directory")
    run = storage.join(tmp_path, "run")
    assert storage.list_dirs(run, "step_*") == ["step_00000002", "step_00000010"]
    assert storage.list_dirs(storage.join(tmp_path, "absent")) == []
    assert storage.read_text(storage.join(run, "step_00000002", "rank0.json")) == "{}"
    assert storage.is_dir(run) and storage.is_file(storage.join(run, "step_notes.txt"))
    storage.delete_dir(storage.join(run, "step_00000002"))
    storage.delete_file(storage.join(run, "step_notes.txt"))
    storage.delete_file(storage.join(run, "never-there"))
    assert storage.list_dirs(run) == ["step_00000010"] and not storage.exists(storage.join(run, "step_notes.txt"))


def test_s3_round_trip(bucket, tmp_path):
    root = f"s3://{bucket}/runs"
    storage.write_text(f"{root}/r1/diverged.txt", "loss is nan")
    assert storage.is_file(f"{root}/r1/diverged.txt") and storage.read_text(f"{root}/r1/diverged.txt") == "loss is nan"
    assert storage.is_dir(f"{root}/r1") and not storage.exists(f"{root}/r2")
    local = tmp_path / "model"
    (local / "sub").mkdir(parents=True)
    for name in ("model.safetensors", "sub/extra.bin", "model_config.yaml"):
        (local / name).write_bytes(name.encode() * 3)
    storage.upload_dir(local, f"{root}/r1/model", last=["model_config.yaml"])
    for step in (2, 4):
        storage.write_text(f"{root}/r1/step_{step:08d}/rank0.json", "{}")
    assert storage.list_dirs(f"{root}/r1", "step_*") == ["step_00000002", "step_00000004"]
    back = storage.download_dir(f"{root}/r1/model", tmp_path / "back")
    assert sorted(p.relative_to(back).as_posix() for p in back.rglob("*") if p.is_file()) == \
        ["model.safetensors", "model_config.yaml", "sub/extra.bin"]
    assert (back / "sub" / "extra.bin").read_bytes() == b"sub/extra.bin" * 3
    storage.delete_dir(f"{root}/r1/model")
    assert not storage.exists(f"{root}/r1/model/model_config.yaml")
    with pytest.raises(ValueError, match="whole bucket"):
        storage.delete_dir(f"s3://{bucket}")
    storage.check_writable(root, "output_dir")
    assert not storage.list_dirs(root, ".raylm-write-probe-*") and storage.exists(f"{root}/r1/diverged.txt")


def test_missing_bucket_and_unknown_scheme_are_user_errors(bucket):
    with pytest.raises(UserError, match=r"cannot write to output_dir s3://raylm-no-such-bucket/runs: .*bucket exists"):
        storage.check_writable("s3://raylm-no-such-bucket/runs", "output_dir")
    with pytest.raises(UserError, match=r"cannot use nosuchfs://x/y: .*s3:// or gs://"):
        storage.exists("nosuchfs://x/y")


def test_token_loader_reads_shards_from_s3_like_local(bucket, tmp_path):
    local = make_dataset(tmp_path / "tokens", sequences=120, shard_size=37)
    remote = f"s3://{bucket}/tokens/test"
    storage.upload_dir(local, remote, last=["manifest.json"])
    assert read_manifest(remote) == read_manifest(local)
    options = {"batch_size": 4, "rank": 1, "world_size": 2, "seed": 3}
    here, there = TokenLoader(local, **options), TokenLoader(remote, **options)
    for _ in range(20):  # past the first epoch (15 batches of rank 1's 60 sequences)
        a, b = next(here), next(there)
        assert np.array_equal(a.inputs.numpy(), b.inputs.numpy()) and np.array_equal(a.sample_ids, b.sample_ids)
    storage.delete_file(f"{remote}/train/shard-00001.parquet")
    with pytest.raises(UserError, match=f"corrupt token shard {remote}/train/shard-00001.parquet: file missing"):
        TokenLoader(remote, batch_size=2)
    with pytest.raises(UserError, match=f"no manifest.json in s3://{bucket}/tokens/absent"):
        TokenLoader(f"s3://{bucket}/tokens/absent", batch_size=2)


def test_latest_complete_checkpoint_on_s3(bucket):
    from raylm.train.checkpoints import latest_complete

    run = f"s3://{bucket}/runs/r1"
    for step, ranks in ((2, (0, 1)), (4, (0, 1)), (6, (0,))):  # step 6 lacks rank 1's part
        for rank in ranks:
            storage.write_text(f"{run}/step_{step:08d}/rank{rank}.json", "{}")
        storage.write_text(f"{run}/step_{step:08d}/deepspeed/latest", "x")
    assert latest_complete(run, 2) == f"{run}/step_00000004"
    assert latest_complete(f"s3://{bucket}/runs/none", 2) is None


def test_sweep_and_study_directories_must_be_filesystem_paths(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "output_dir": "s3://bucket/sweeps", "search": {},
                                    "base": {"data": {"shards_dir": "s3://bucket/tokens"}}}))
    from raylm.tune.sweep_config import check_local_directory, load_sweep

    with pytest.raises(ConfigError, match=r"output_dir is s3://bucket/sweeps, but a sweep keeps its state"):
        load_sweep(path)
    check_local_directory(str(tmp_path), "output_dir", "study")  # a path is fine
