"""Connecting to Ray: the cluster named by ``--address`` / ``$RAY_ADDRESS``, or the embedded default."""

from __future__ import annotations

import logging
import os
import socket

LOCALHOST = "127.0.0.1"
DASHBOARD_PORT = 8265  # Ray's default
# what the workers need to reach s3:// and gs:// storage (raylm.storage) and MLflow's S3 artifact store
STORAGE_ENV_PREFIXES = ("AWS_",)
STORAGE_ENV = ("MLFLOW_S3_ENDPOINT_URL", "MLFLOW_S3_IGNORE_TLS", "GOOGLE_APPLICATION_CREDENTIALS")


def connect_ray(address: str | None = None) -> None:
    """Join ``address`` / ``$RAY_ADDRESS``, or start a local Ray bound to 127.0.0.1 with its dashboard
    on 127.0.0.1; nothing happens when Ray is already initialised in this process.

    The dashboard is not optional: it serves the State API through which Ray Train's
    placement-group cleaner watches each run's controller. Without it the cleaner warns every
    second ("Failed to query Ray Train Controller actor state") and never frees the workers'
    placement group of a stopped trial, which can deadlock a sweep on a small machine.
    """
    import ray
    from raylm.console import route_ray_output

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        start_local_ray(logging_level=logging.WARNING)
    route_ray_output()  # a quiet console (raylm.console) sends worker output to the run's log file


def start_local_ray(**init_kwargs) -> None:
    """A local Ray on 127.0.0.1 with its dashboard, whose State API its own processes can find.

    Ray's State API client, used inside Ray Train's placement-group cleaner, resolves an unset
    address by scanning the machine for Ray instances and takes the newest: with a second Ray
    on the machine (another sweep, a test cluster) the cleaner asks the wrong cluster, fails, and
    never frees a stopped trial's workers. ``RAY_API_SERVER_ADDRESS``, set before Ray starts, is
    inherited by every Ray process and names this instance's dashboard.

    The storage variables of this process (:func:`storage_env`: credentials and endpoints) go to every
    worker through the job's ``runtime_env``, never into logs or params. On a cluster, the job's own
    ``runtime_env`` carries them (docs/storage.md).
    """
    import ray

    env = storage_env()
    if env:
        runtime_env = dict(init_kwargs.pop("runtime_env", None) or {})
        runtime_env["env_vars"] = {**env, **runtime_env.get("env_vars", {})}
        init_kwargs["runtime_env"] = runtime_env
    port = dashboard_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://{LOCALHOST}:{port}"
    ray.init(include_dashboard=True, dashboard_host=LOCALHOST, dashboard_port=port, _node_ip_address=LOCALHOST,
             **init_kwargs)


def storage_env() -> dict[str, str]:
    """This process's variables that configure storage access (``AWS_*``, ``MLFLOW_S3_ENDPOINT_URL``,
    ``GOOGLE_APPLICATION_CREDENTIALS``)."""
    return {k: v for k, v in os.environ.items() if k.startswith(STORAGE_ENV_PREFIXES) or k in STORAGE_ENV}


def dashboard_port() -> int:
    """Ray's default dashboard port when it is free, else any free port (Ray itself would refuse to
    start when a second local instance, say a sweep next to a training run, finds 8265 taken)."""
    for port in (DASHBOARD_PORT, 0):
        with socket.socket() as sock:
            try:
                sock.bind((LOCALHOST, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError("no free port for the Ray dashboard")


def cluster_totals() -> dict[str, float]:
    """CPUs and GPUs of the whole cluster Ray is connected to."""
    import ray

    total = ray.cluster_resources()
    return {"CPU": float(total.get("CPU", 0.0)), "GPU": float(total.get("GPU", 0.0))}
