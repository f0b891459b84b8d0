"""A training run on a two-node Ray cluster (``ray.cluster_utils.Cluster``) on this machine.

The head node has no CPUs, so the training workers are placed on the second node. That node
starts with ``PYTHONPATH`` pointing at a package named ``mlflow`` that raises on import: a
worker there that opened the tracking store would fail the run. The driver (this process, on
the head node) logs through the tracking writer. Prints one JSON line with the result.

    python two_node_training.py WORKDIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(workdir: Path) -> None:
    from ray.cluster_utils import Cluster

    import ray
    from raylm.ray_session import dashboard_port

    poison = workdir / "poison"
    (poison / "mlflow").mkdir(parents=True, exist_ok=True)
    (poison / "mlflow" / "__init__.py").write_text(
        "raise ImportError('a process on the worker node imported mlflow: workers must not open the store')\n")
    port = dashboard_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"  # see raylm.ray_session.start_local_ray
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                            "include_dashboard": True,
                                                            "dashboard_host": "127.0.0.1",
                                                            "dashboard_port": port})
    worker_node = cluster.add_node(num_cpus=2, resources={"worker_node": 2},
                                   env_vars={"PYTHONPATH": str(poison)})
    ray.init(address=cluster.address, logging_level="ERROR")
    from tests.ray.train_helpers import tiny_config

    from raylm.train.run import run_training

    cfg = tiny_config(workdir, train={"max_steps": 4, "log_every": 1, "eval_every": 2, "checkpoint_every": 4})
    result = run_training(cfg)
    probe = ray.remote(num_cpus=1)(_imports_mlflow).remote()
    # The result goes to a file: Ray streams worker log lines to stdout after this point.
    (workdir / "result.json").write_text(json.dumps({"run_id": result.mlflow_run_id,
                                                      "tracking_uri": result.tracking_uri,
                                                      "worker_node": worker_node.node_id,
                                                      "poisoned": ray.get(probe)}))
    ray.shutdown()
    cluster.shutdown()


def _imports_mlflow() -> str:
    """Proof the poison works on the worker node: importing mlflow there fails."""
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return "mlflow imported"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    main(Path(sys.argv[1]))
