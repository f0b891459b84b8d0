"""One local Ray instance for the whole test session (starting Ray costs ~20 s on 2 cores)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """A local Ray with 2 CPUs and its dashboard on 127.0.0.1 (as :func:`raylm.ray_session.connect_ray`
    starts it), started once and shut down after the session.

    The S3 test server's credentials and endpoint are set in this process before Ray starts, so
    ``start_local_ray`` forwards them to every worker (its runtime_env) as it does a user's.

    ``address="local"`` always starts a fresh instance, even when ``RAY_ADDRESS`` names a cluster.
    Ray 2.60's token authentication is set up by ``ray.init`` itself for a local instance.
    """
    import ray
    from raylm.ray_session import start_local_ray

    if ray.is_initialized():
        yield ray
        return
    saved = {k: os.environ.get(k) for k in s3_server.env()}
    os.environ.update(s3_server.env())
    start_local_ray(address="local", num_cpus=2, num_gpus=0, logging_level="ERROR",
                    object_store_memory=1024 * 1024 * 1024)
    yield ray
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory, ray_local):
    """The tiny study of tests/ray/study_helpers.py run once per session: (directory, study, outcome).
    Shared by the study tests and the MLflow UI browser test."""
    from raylm.study.config import load_study
    from raylm.study.run import run_study
    from tests.ray.study_helpers import write_study

    tmp = tmp_path_factory.mktemp("study")
    study = load_study(write_study(tmp))
    return tmp, study, run_study(study, log=print)
