"""cluster.yaml runs as written: Ray's own autoscaler schema and ``validate_config`` accept it, and it
keeps the promises docs/cluster.md makes. Services bind to loopback, token authentication is on
everywhere, GPU nodes get a CUDA build of torch and every node the project with its constraints, the
shared file system holds what the cluster study writes, and the MLflow server is on 127.0.0.1 where
the job drivers look for it. Every job command in the file's comments and in docs/cluster.md starts.

:func:`cluster_problems` lists what is wrong with a config; the tests break copies of the real one to
show that each check can fail.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from tests.deploy_checks import REPO_ROOT, check_job_command, job_commands, pinned_python, pinned_version, under

CLUSTER_YAML = REPO_ROOT / "cluster.yaml"
SHARED_MOUNT = "/mnt/raylm"
GPU_INSTANCE = re.compile(r"^(g4dn|g5|g6|g6e|gr6|p3|p3dn|p4d|p4de|p5|p5e|p5en|p6-b200)\.")


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def ray_validate(config: dict) -> None:
    """What ``ray up`` does with the file before it talks to the cloud: fill in the provider's
    defaults, merge the setup commands, then validate against the schema and Ray's own rules."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_ray_schema_accepts_the_file(cluster):
    jsonschema.validate(cluster, ray_schema())


def test_ray_validate_config_accepts_the_file(cluster):
    ray_validate(cluster)


def _rename(config, old, new):
    config[new] = config.pop(old)


@pytest.mark.parametrize("breakage, error", [
    (lambda c: _rename(c, "head_start_ray_commands", "head_start_commands"), jsonschema.ValidationError),
    (lambda c: c["available_node_types"]["gpu_worker"].update(min_workers="one"), jsonschema.ValidationError),
    (lambda c: c.update(head_node_type="cpu_head"), ValueError),
], ids=["misspelled-key", "wrong-type", "unknown-head-type"])
def test_ray_rejects_a_broken_copy(cluster, breakage, error):
    broken = copy.deepcopy(cluster)
    breakage(broken)
    with pytest.raises(error):
        ray_validate(broken)


# ---- the promises -------------------------------------------------------------------------------------------

def commands(config: dict, key: str) -> list[str]:
    return [" ".join(c.split()) for c in config.get(key) or []]


def find(config: dict, key: str, needle: str) -> str | None:
    return next((c for c in commands(config, key) if needle in c), None)


def flag(tokens: list[str], name: str) -> str | None:
    """The value of ``--name value`` or ``--name=value`` in ``tokens``."""
    for i, token in enumerate(tokens):
        if token == name and i + 1 < len(tokens):
            return tokens[i + 1]
        if token.startswith(name + "="):
            return token.split("=", 1)[1]
    return None


def run_options(config: dict, node: str) -> list[str]:
    docker = config.get("docker") or {}
    return [" ".join(o.split()) for o in (docker.get("run_options") or []) + (docker.get(f"{node}_run_options") or [])]


def cluster_problems(config: dict) -> list[str]:
    problems = []
    text = yaml.safe_dump(config)
    if re.search(r"RAY_AUTH_MODE\s*[=:]\s*disabled", text):
        problems.append("token authentication is disabled somewhere (RAY_AUTH_MODE=disabled)")
    problems += _head_problems(config) + _worker_problems(config) + _install_problems(config)
    problems += _tracking_problems(config) + _storage_problems(config)
    return problems


def _head_problems(config: dict) -> list[str]:
    head = find(config, "head_start_ray_commands", "ray start --head")
    if head is None:
        return ["head_start_ray_commands has no `ray start --head`"]
    tokens = shlex.split(head)
    problems = []
    if flag(tokens, "--dashboard-host") != "127.0.0.1":
        problems.append(f"the head's dashboard binds to {flag(tokens, '--dashboard-host')}, not 127.0.0.1")
    if flag(tokens, "--include-dashboard") in ("false", "False", "0"):
        problems.append("the head starts without its dashboard (the job API and Ray Train's State API need it)")
    if "RAY_AUTH_MODE=token" not in tokens:
        problems.append("the head's `ray start` does not set RAY_AUTH_MODE=token")
    if not any("RAY_AUTH_MODE=token" in option for option in run_options(config, "head")):
        problems.append("the head container's environment lacks RAY_AUTH_MODE=token (ray CLI on the head)")
    mounts = config.get("file_mounts") or {}
    if mounts.get("~/.ray/auth_token") != "~/.ray/auth_token":
        problems.append("the Ray token (~/.ray/auth_token) is not copied to the nodes")
    return problems


def _worker_problems(config: dict) -> list[str]:
    problems = []
    worker = find(config, "worker_start_ray_commands", "ray start")
    if worker is None or "RAY_AUTH_MODE=token" not in shlex.split(worker):
        problems.append("the workers' `ray start` does not set RAY_AUTH_MODE=token")
    types = config["available_node_types"]
    gpu_types = [name for name, t in types.items() if name != config["head_node_type"]
                 and t.get("resources", {}).get("GPU", 0) >= 1
                 and GPU_INSTANCE.match(t["node_config"].get("InstanceType", ""))]
    if not gpu_types:
        problems.append("no worker node type is a GPU instance with GPU resources")
    # raylm sizes trials to the GPUs present when a job starts: keep one GPU node up.
    if gpu_types and not any(types[name].get("min_workers", 0) >= 1 for name in gpu_types):
        problems.append("no GPU node stays up (min_workers: 0): a GPU job would find no GPU when it starts")
    return problems


def _torch_install(command: str) -> tuple[str, str] | None:
    """(version spec, index url) of a `pip install torch==...` command."""
    tokens = shlex.split(command)
    if "pip" not in tokens or "install" not in tokens:
        return None
    spec = next((t for t in tokens if t.startswith("torch==")), None)
    return (spec, flag(tokens, "--index-url") or "") if spec else None


def _install_problems(config: dict) -> list[str]:
    from ray.autoscaler._private.util import merge_setup_commands

    merged = merge_setup_commands(copy.deepcopy({k: config.get(k) or [] for k in (
        "setup_commands", "head_setup_commands", "worker_setup_commands")}))
    torch_version, problems = pinned_version("torch"), []
    for node in ("head", "worker"):
        steps = [" ".join(c.split()) for c in merged[f"{node}_setup_commands"]]
        installs_project = [i for i, c in enumerate(steps) if re.search(r"pip install .*-c constraints\.txt.* -e", c)]
        project = installs_project[0] if installs_project else None
        if project is None or "[cluster]" not in steps[project]:
            problems.append(f"the {node} does not install the project with -c constraints.txt and the cluster extra")
            continue
        torch = [(i, _torch_install(c)) for i, c in enumerate(steps) if _torch_install(c)]
        if not torch or torch[0][0] > project:
            problems.append(f"the {node} installs no torch build before the project")
            continue
        spec, index = torch[0][1]
        if not re.fullmatch(rf"torch=={re.escape(torch_version)}(\+\w+)?", spec):
            problems.append(f"the {node} installs {spec}, not the constraints' torch=={torch_version}")
        if node == "worker":
            cuda = re.search(r"/whl/(cu\d+)$", index)
            if not cuda:
                problems.append(f"the GPU workers install torch from {index or 'PyPI'}, not a CUDA index")
            elif "+" in spec and spec.split("+")[1] != cuda.group(1):
                problems.append(f"the workers' {spec} does not match the index {index}")
    docker = config.get("docker") or {}
    tag = f"{pinned_version('ray')}-py{pinned_python().replace('.', '')}"
    for key in ("head_image", "worker_image"):
        image = docker.get(key) or docker.get("image", "")
        if not image.startswith(f"rayproject/ray:{tag}"):
            problems.append(f"docker.{key} {image!r} is not Ray's image for the constraints' ray and Python ({tag})")
    if not (docker.get("worker_image") or "").endswith("-gpu"):
        problems.append("the workers' image is not a GPU image")
    return problems


def _tracking_problems(config: dict) -> list[str]:
    command = find(config, "head_start_ray_commands", "mlflow server")
    if command is None:
        return ["the head starts no MLflow tracking server"]
    server = shlex.split(command[command.index("mlflow server"):].split(">")[0])
    problems = []
    if flag(server, "--host") != "127.0.0.1":
        problems.append(f"the MLflow server binds to {flag(server, '--host')}, not 127.0.0.1")
    if flag(server, "--workers") != "1":
        problems.append("the MLflow server runs more than one worker process")
    if "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" not in command:
        problems.append("the MLflow server starts its job runner (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false)")
    if not (flag(server, "--backend-store-uri") or "").startswith("postgresql://"):
        problems.append("the MLflow server's store is not PostgreSQL")
    if not (flag(server, "--artifacts-destination") or "").startswith("s3://"):
        problems.append("the MLflow server's artifacts do not go to S3")
    port = flag(server, "--port") or "5000"
    if not any(f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port}" in o for o in run_options(config, "head")):
        problems.append(f"the head's job drivers are not pointed at the server (MLFLOW_TRACKING_URI, port {port})")
    return problems


def _storage_problems(config: dict) -> list[str]:
    problems = []
    init = " ".join(commands(config, "initialization_commands"))
    if not re.search(rf"mount -t nfs4 .* {re.escape(SHARED_MOUNT)}( |$)", init):
        problems.append(f"no node mounts the shared file system at {SHARED_MOUNT}")
    for node in ("head", "worker"):
        if not any(f"--volume {SHARED_MOUNT}:{SHARED_MOUNT}" in o for o in run_options(config, node)):
            problems.append(f"the {node} container does not see {SHARED_MOUNT}")
    return problems


def test_cluster_yaml_keeps_its_promises(cluster):
    assert cluster_problems(cluster) == []


def _set_head_start(c, old, new):
    c["head_start_ray_commands"] = [cmd.replace(old, new) for cmd in c["head_start_ray_commands"]]


BREAKAGES = {
    "dashboard-on-all-interfaces": lambda c: _set_head_start(c, "--dashboard-host=127.0.0.1",
                                                             "--dashboard-host=0.0.0.0"),
    "auth-disabled": lambda c: c["docker"]["run_options"].append("--env RAY_AUTH_MODE=disabled"),
    "no-token-on-workers": lambda c: c.update(worker_start_ray_commands=["ray start --address=$RAY_HEAD_IP:6379"]),
    "cpu-torch-on-gpu-workers": lambda c: c.update(worker_setup_commands=[
        s.replace("/whl/cu126", "/whl/cpu").replace("+cu126", "") for s in c["worker_setup_commands"]]),
    "no-constraints": lambda c: c.update(head_setup_commands=[
        s.replace("-c constraints.txt ", "") for s in c["head_setup_commands"]]),
    "no-gpu-type": lambda c: c["available_node_types"]["gpu_worker"].update(resources={"CPU": 48}),
    "mlflow-on-all-interfaces": lambda c: _set_head_start(c, "--host 127.0.0.1", "--host 0.0.0.0"),
    "no-shared-mount": lambda c: c.update(initialization_commands=[]),
}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_a_broken_copy_breaks_a_promise(cluster, name):
    broken = copy.deepcopy(cluster)
    BREAKAGES[name](broken)
    assert cluster_problems(broken), f"{name}: the checks found nothing wrong"


# ---- the jobs it runs -------------------------------------------------------------------------------------

def documented_ray_up_commands() -> list[list[str]]:
    """The job commands of cluster.yaml's comments, docs/cluster.md and README's "On a cluster" section that
    name files by their paths in the repository (`ray job submit --working-dir .`); the KubeRay ones name
    them inside the image."""
    readme = (REPO_ROOT / "README.md").read_text()
    on_a_cluster = readme.split("## On a cluster", 1)[1].split("\n## ", 1)[0]
    found = (job_commands(CLUSTER_YAML.read_text()) + job_commands((REPO_ROOT / "docs" / "cluster.md").read_text())
             + job_commands(on_a_cluster))
    return [c for c in found if not c[1].startswith("/")]


def test_documented_jobs_start_and_write_to_shared_storage():
    found = documented_ray_up_commands()
    assert any("scaling_study.py" in c[1] for c in found), "no study job in cluster.yaml or docs/cluster.md"
    for argv in found:
        checked = check_job_command(argv)
        for path in [*checked.output_dirs, checked.shards_dir]:
            assert under(path, SHARED_MOUNT), f"{shlex.join(argv)} writes to {path}, outside {SHARED_MOUNT}"


def test_a_broken_job_command_is_caught():
    with pytest.raises(AssertionError, match="not in the repository"):
        check_job_command(["python", "jobs/scaling_study.py", "--config", "jobs/configs/no_such_study.yaml"])
    with pytest.raises(AssertionError, match="rejects the arguments"):
        check_job_command(["python", "jobs/scaling_study.py", "fit", "jobs/configs/study_cluster.yaml"])
    with pytest.raises(AssertionError, match="train.lrr"):
        check_job_command(["python", "jobs/pretrain.py", "--config", "jobs/configs/gpt_tiny.yaml", "--train.lrr", "1"])
