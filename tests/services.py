"""Real servers for the storage and tracking tests, each started once per test session on 127.0.0.1.

- :func:`start_s3_server`: moto's standalone S3 API server (``moto.server``), a real HTTP S3 endpoint
  that boto3, pyarrow's ``S3FileSystem`` and MLflow's artifact store talk to as they would to AWS.
- :func:`start_postgres`: a throwaway PostgreSQL cluster (Debian's ``postgresql`` package) in a
  temporary directory. PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.

Both return a handle with the address to use and a ``stop()``; the session fixtures in
``tests/conftest.py`` own them.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from raylm.tracking.ui_server import free_port

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "raylm-test", "AWS_SECRET_ACCESS_KEY": "raylm-test-secret",
                  "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


@dataclass
class S3Server:
    endpoint: str             # http://127.0.0.1:PORT
    process: subprocess.Popen

    def env(self) -> dict[str, str]:
        """What a client process needs to reach this server: credentials and the endpoint
        (``AWS_ENDPOINT_URL`` is read by boto3, MLflow and pyarrow alike)."""
        return {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def create_bucket(self, name: str) -> str:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())
        client.create_bucket(Bucket=name)
        return name

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def stop(self) -> None:
        _terminate(self.process)


def _boto_credentials() -> dict:
    return {"aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"]}


def start_s3_server(log_dir: Path) -> S3Server:
    port = free_port()
    log = open(log_dir / "moto.log", "w")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    _wait_until(lambda: _http_ok(f"{endpoint}/moto-api/"), process, "moto S3 server", log_dir / "moto.log")
    return S3Server(endpoint, process)


@dataclass
class Postgres:
    uri: str                 # postgresql://USER:PASSWORD@127.0.0.1:PORT/DB
    data_dir: Path
    run_as: list[str]        # the command prefix that runs a binary as the server's owner

    def create_database(self, name: str) -> str:
        """A fresh database; returns its SQLAlchemy URI."""
        base, _ = self.uri.rsplit("/", 1)
        port = base.rsplit(":", 1)[1]
        subprocess.run([*self.run_as, _pg_bin("createdb"), "-h", "127.0.0.1", "-p", port, name], check=True,
                       env={**os.environ, "PGPASSWORD": _PG_PASSWORD, "PGUSER": _PG_USER})
        return f"{base}/{name}"

    def stop(self) -> None:
        subprocess.run([*self.run_as, _pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


_PG_USER = "raylm"
_PG_PASSWORD = "raylm-test"


def postgres_available() -> bool:
    return _pg_bin("initdb", required=False) is not None


def _pg_bin(name: str, required: bool = True) -> str | None:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if found is None and required:
        raise RuntimeError(f"{name} not found: install PostgreSQL (apt-get install postgresql)")
    return found


def start_postgres() -> Postgres:
    """initdb a new cluster (password authentication, listening on 127.0.0.1 only) and start it."""
    root = Path(tempfile.mkdtemp(prefix="raylm-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL will not run as root
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data_dir = root / "data"
    password_file = root / "password"
    password_file.write_text(_PG_PASSWORD)
    if run_as:
        shutil.chown(password_file, "postgres")
    subprocess.run([*run_as, _pg_bin("initdb"), "-D", str(data_dir), "-U", _PG_USER, "--auth=scram-sha-256",
                    f"--pwfile={password_file}"], check=True, capture_output=True)
    port = free_port()
    log = root / "postgres.log"
    subprocess.run([*run_as, _pg_bin("pg_ctl"), "-D", str(data_dir), "-l", str(log), "-w", "-t", "60", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {root}", "start"], check=True, capture_output=True)
    return Postgres(f"postgresql://{_PG_USER}:{_PG_PASSWORD}@127.0.0.1:{port}/postgres", data_dir, run_as)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except Exception:
        return False


def _wait_until(ready, process: subprocess.Popen, what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text()[-2000:]}")
        if ready():
            return
        time.sleep(0.25)
    _terminate(process)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s: {log.read_text()[-2000:]}")


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
