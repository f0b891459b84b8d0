"""deploy/kuberay/ is a KubeRay deployment consistent with the project: the manifests have the shape of
KubeRay's ray.io/v1 resources, the RayJob's cluster is the RayCluster's, Ray versions and images match
constraints.txt and deploy/Dockerfile, the GPU group asks for GPUs, nothing is exposed beyond a
ClusterIP Service, token authentication is on, the MLflow sidecar stays on loopback, every volume,
service account and Secret they use is defined or documented, and the RayJob's entrypoint (and every
job command docs/cluster.md gives for Kubernetes) starts: the script and config exist in the image's
copy of the repository and the arguments parse with the job's own parser.

:func:`kuberay_problems` lists what is wrong; the tests break copies to show that each check can fail.
"""

from __future__ import annotations

import copy
import re
import shlex

import pytest
import yaml
from tests.deploy_checks import (
    REPO_ROOT,
    check_job_command,
    dockerfile_workdir,
    job_commands,
    pinned_python,
    pinned_version,
    under,
)

DEPLOY = REPO_ROOT / "deploy" / "kuberay"
SHARED_MOUNT = "/mnt/raylm"
EXPOSED = ("LoadBalancer", "NodePort")


def load_all(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


@pytest.fixture
def manifests() -> dict:
    (raycluster,) = load_all("raycluster.yaml")
    (rayjob,) = load_all("rayjob-study.yaml")
    return {"raycluster": raycluster, "rayjob": rayjob, "shared": load_all("shared.yaml")}


# ---- walking the manifests ----------------------------------------------------------------------------------

def groups(spec: dict) -> list[tuple[str, dict]]:
    """(name, group spec) of the head group and every worker group of a RayClusterSpec."""
    return [("head", spec["headGroupSpec"])] + [(g.get("groupName", "?"), g) for g in spec.get("workerGroupSpecs", [])]


def ray_container(group: dict) -> dict:
    """KubeRay runs Ray in a group's first container."""
    return group["template"]["spec"]["containers"][0]


def all_containers(spec: dict) -> list[dict]:
    return [c for _, g in groups(spec) for c in g["template"]["spec"]["containers"]]


def walk(node, path=""):
    """Every (path, key, value) in a parsed manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# ---- the checks -----------------------------------------------------------------------------------------------

def kuberay_problems(m: dict) -> list[str]:
    cluster, job = m["raycluster"], m["rayjob"]
    problems = _shape_problems(cluster, job)
    if problems:  # the rest reads fields the shape check vouches for
        return problems
    spec = cluster["spec"]
    if job["spec"]["rayClusterSpec"] != spec:
        problems.append("the RayJob's rayClusterSpec differs from raycluster.yaml's spec")
    for name, s in (("raycluster.yaml", spec), ("rayjob-study.yaml", job["spec"]["rayClusterSpec"])):
        problems += [f"{name}: {p}" for p in _spec_problems(s)]
    problems += _exposure_problems([cluster, job, *m["shared"]])
    problems += _reference_problems(spec, m["shared"])
    problems += _entrypoint_problems(job)
    return problems


def _shape_problems(cluster: dict, job: dict) -> list[str]:
    """The fields KubeRay's ray.io/v1 CRDs require, with the types they require."""
    problems = []
    for doc, kind in ((cluster, "RayCluster"), (job, "RayJob")):
        if doc.get("apiVersion") != "ray.io/v1" or doc.get("kind") != kind:
            problems.append(f"not a ray.io/v1 {kind}: {doc.get('apiVersion')} {doc.get('kind')}")
        if not (doc.get("metadata") or {}).get("name"):
            problems.append(f"the {kind} has no metadata.name")
    job_spec = job.get("spec") or {}
    if not isinstance(job_spec.get("entrypoint"), str):
        problems.append("the RayJob has no spec.entrypoint")
    if job_spec.get("shutdownAfterJobFinishes") is not True:
        problems.append("the RayJob keeps its cluster after the job (shutdownAfterJobFinishes)")
    specs = (("RayCluster spec", cluster.get("spec")), ("RayJob rayClusterSpec", job_spec.get("rayClusterSpec")))
    for name, spec in specs:
        if not isinstance(spec, dict) or "headGroupSpec" not in spec:
            problems.append(f"the {name} has no headGroupSpec")
            continue
        for group_name, group in groups(spec):
            params = group.get("rayStartParams")
            if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
                problems.append(f"{name} group {group_name}: rayStartParams must map names to strings")
            containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or []
            if not containers or not all(c.get("name") and c.get("image") for c in containers):
                problems.append(f"{name} group {group_name}: containers need a name and an image")
            if group_name != "head":
                low, high = group.get("minReplicas"), group.get("maxReplicas")
                replicas = group.get("replicas", low)
                if not (isinstance(low, int) and isinstance(high, int) and low <= (replicas or 0) <= high):
                    problems.append(f"{name} group {group_name}: needs minReplicas <= replicas <= maxReplicas")
    return problems


def _spec_problems(spec: dict) -> list[str]:
    problems = []
    ray_version = pinned_version("ray")
    if spec.get("rayVersion") != ray_version:
        problems.append(f"rayVersion {spec.get('rayVersion')!r} is not the constraints' Ray {ray_version}")
    if (spec.get("authOptions") or {}).get("mode") != "token":
        problems.append("token authentication is not on (spec.authOptions.mode: token)")
    images = {ray_container(g)["image"] for _, g in groups(spec)}
    if len(images) != 1:
        problems.append(f"the Ray containers use different images: {sorted(images)}")
    base = re.search(r"^FROM\s+(\S+)", (REPO_ROOT / "deploy" / "Dockerfile").read_text(), re.M).group(1)
    expected = f"rayproject/ray:{ray_version}-py{pinned_python().replace('.', '')}-gpu"
    if base != expected:
        problems.append(f"deploy/Dockerfile builds on {base}, not {expected}")
    gpu = [name for name, g in groups(spec)[1:]
           if int(str(ray_container(g).get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))) >= 1]
    if not gpu:
        problems.append("no worker group's Ray container asks for nvidia.com/gpu")
    elif not any(g.get("minReplicas", 0) >= 1 for name, g in groups(spec)[1:] if name in gpu):
        problems.append("no GPU pod stays up (minReplicas: 0): a GPU job would find no GPU when it starts")
    for name, group in groups(spec):
        limits = ray_container(group).get("resources", {}).get("limits", {})
        requests = ray_container(group).get("resources", {}).get("requests", {})
        if "nvidia.com/gpu" in requests and requests["nvidia.com/gpu"] != limits.get("nvidia.com/gpu"):
            problems.append(f"group {name}: GPU requests and limits differ (Kubernetes requires them equal)")
        mounts = {v["mountPath"] for v in ray_container(group).get("volumeMounts", [])}
        if SHARED_MOUNT not in mounts:
            problems.append(f"group {name}: the shared volume is not mounted at {SHARED_MOUNT}")
    return problems + _tracking_problems(spec)


def _tracking_problems(spec: dict) -> list[str]:
    head = spec["headGroupSpec"]["template"]["spec"]["containers"]
    servers = [c for c in head if "mlflow server" in " ".join(c.get("command", []) + c.get("args", []))]
    if not servers:
        return ["the head pod runs no MLflow server"]
    server = servers[0]
    argv, env = server.get("command", []) + server.get("args", []), env_of(server)
    problems = []

    def arg(name):
        return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None

    if arg("--host") != "127.0.0.1":
        problems.append(f"the MLflow server binds to {arg('--host')}, not 127.0.0.1")
    if arg("--workers") != "1":
        problems.append("the MLflow server runs more than one worker process")
    if env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") != "false":
        problems.append("the MLflow server starts its job runner (MLFLOW_SERVER_ENABLE_JOB_EXECUTION)")
    store = env.get("MLFLOW_BACKEND_STORE_URI")
    if not (isinstance(store, dict) and "secretKeyRef" in store):
        problems.append("the MLflow server's database URI does not come from a Secret")
    if not (arg("--artifacts-destination") or "").startswith("s3://"):
        problems.append("the MLflow server's artifacts do not go to S3")
    uri = f"http://127.0.0.1:{arg('--port') or '5000'}"
    if env_of(head[0]).get("MLFLOW_TRACKING_URI") != uri:
        problems.append(f"the head's job drivers are not pointed at {uri} (MLFLOW_TRACKING_URI)")
    return problems


def _exposure_problems(docs: list[dict]) -> list[str]:
    problems = []
    for doc in docs:
        for path, key, value in walk(doc):
            if key in ("serviceType", "type") and value in EXPOSED:
                problems.append(f"{doc['kind']}{path}.{key} is {value}: exposed beyond the Kubernetes cluster")
            if key == "enableIngress" and value:
                problems.append(f"{doc['kind']}{path}: an Ingress exposes the dashboard")
            if key in ("hostNetwork", "hostPort") and value:
                problems.append(f"{doc['kind']}{path}.{key}: a port on the node's own address")
            if key == "name" and value == "RAY_AUTH_MODE":
                problems.append(f"{doc['kind']}{path}: RAY_AUTH_MODE set by hand (spec.authOptions owns it)")
        if doc["kind"] in ("Service", "Ingress"):
            problems.append(f"{doc['kind']} {doc['metadata']['name']}: the manifests add no Service or Ingress")
        if re.search(r"RAY_AUTH_MODE\W+disabled|mode:\s*disabled", yaml.safe_dump(doc)):
            problems.append(f"{doc['kind']}: token authentication disabled")
    return problems


def _reference_problems(spec: dict, shared: list[dict]) -> list[str]:
    """Volumes and service accounts the pods use are in shared.yaml; Secrets are created as docs/cluster.md says."""
    defined = {(d["kind"], d["metadata"]["name"]): d for d in shared}
    doc = (REPO_ROOT / "docs" / "cluster.md").read_text()
    problems = []
    for name, group in groups(spec):
        pod = group["template"]["spec"]
        account = pod.get("serviceAccountName")
        if account and ("ServiceAccount", account) not in defined:
            problems.append(f"group {name}: service account {account} is not in shared.yaml")
        for volume in pod.get("volumes", []):
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and ("PersistentVolumeClaim", claim) not in defined:
                problems.append(f"group {name}: volume claim {claim} is not in shared.yaml")
            elif claim and volume["name"] in {m["name"] for m in ray_container(group).get("volumeMounts", [])
                                              if m["mountPath"] == SHARED_MOUNT}:
                if "ReadWriteMany" not in defined[("PersistentVolumeClaim", claim)]["spec"]["accessModes"]:
                    problems.append(f"the shared volume claim {claim} is not ReadWriteMany")
        for container in pod["containers"]:
            for value in env_of(container).values():
                ref = (value or {}).get("secretKeyRef") if isinstance(value, dict) else None
                if ref and not re.search(rf"kubectl create secret generic {re.escape(ref['name'])}\b[^`]*"
                                         rf"--from-literal={re.escape(ref['key'])}=", doc):
                    problems.append(f"Secret {ref['name']} (key {ref['key']}) is not created in docs/cluster.md")
    return problems


def _entrypoint_problems(job: dict) -> list[str]:
    argv = shlex.split(job["spec"]["entrypoint"])
    try:
        checked = check_job_command(argv, image_root=dockerfile_workdir())
    except AssertionError as exc:
        return [f"the RayJob's entrypoint would not start: {exc}"]
    return [f"the RayJob writes to {path}, outside the shared volume {SHARED_MOUNT}"
            for path in [*checked.output_dirs, checked.shards_dir] if not under(path, SHARED_MOUNT)]


# ---- the tests ------------------------------------------------------------------------------------------------

def test_manifests_are_consistent_with_each_other_and_the_project(manifests):
    assert kuberay_problems(manifests) == []


def test_rayjob_runs_a_study():
    (job,) = load_all("rayjob-study.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[1].endswith("/jobs/scaling_study.py")
    assert check_job_command(argv, image_root=dockerfile_workdir()).subcommand == "study"


def test_kubernetes_job_commands_in_docs_start():
    """The commands docs/cluster.md gives for a KubeRay cluster name files inside the image."""
    found = [c for c in job_commands((REPO_ROOT / "docs" / "cluster.md").read_text()) if c[1].startswith("/")]
    assert found, "docs/cluster.md gives no job command for a KubeRay cluster"
    for argv in found:
        assert argv[1].startswith(dockerfile_workdir() + "/"), f"{shlex.join(argv)}: not a path in the image"
        checked = check_job_command(argv, image_root=dockerfile_workdir())
        assert all(under(p, SHARED_MOUNT) for p in [*checked.output_dirs, checked.shards_dir])


def test_dockerfile_installs_a_cuda_torch_then_the_project_with_its_constraints():
    text = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    torch = re.search(r"pip install [^\n]*torch==(\S+) --index-url (\S+)", text)
    project = re.search(r'pip install [^\n]*-c constraints\.txt -e "\.\[cluster\]"', text)
    assert torch and project and torch.start() < project.start()
    version, _, label = torch.group(1).partition("+")
    assert version == pinned_version("torch")
    assert label.startswith("cu") and torch.group(2).endswith(f"/whl/{label}")


def _worker(m):
    return m["raycluster"]["spec"]["workerGroupSpecs"][0]


def _both(m, change):
    """Apply ``change`` to the RayCluster's spec and the RayJob's copy of it (they stay identical)."""
    change(m["raycluster"]["spec"])
    change(m["rayjob"]["spec"]["rayClusterSpec"])


BREAKAGES = {
    "load-balancer": lambda m: _both(m, lambda s: s["headGroupSpec"].update(serviceType="LoadBalancer")),
    "no-token": lambda m: _both(m, lambda s: s.pop("authOptions")),
    "auth-disabled": lambda m: _both(m, lambda s: s["authOptions"].update(mode="disabled")),
    "no-gpu": lambda m: _both(m, lambda s: s["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
                               ["resources"]["limits"].pop("nvidia.com/gpu")),
    "old-ray": lambda m: _both(m, lambda s: s.update(rayVersion="2.9.0")),
    "job-cluster-drifts": lambda m: m["rayjob"]["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(maxReplicas=8),
    "integer-start-param": lambda m: _both(m, lambda s: s["headGroupSpec"]["rayStartParams"].update(port=6379)),
    "missing-config": lambda m: m["rayjob"]["spec"].update(entrypoint=m["rayjob"]["spec"]["entrypoint"].replace(
        "study_cluster.yaml", "study_nowhere.yaml")),
    "misspelled-flag": lambda m: m["rayjob"]["spec"].update(entrypoint=m["rayjob"]["spec"]["entrypoint"].replace(
        "--config", "--confg")),
    "undefined-volume": lambda m: _both(m, lambda s: s["headGroupSpec"]["template"]["spec"]["volumes"][0]
                                         ["persistentVolumeClaim"].update(claimName="elsewhere")),
    "mlflow-on-all-interfaces": lambda m: _both(m, lambda s: s["headGroupSpec"]["template"]["spec"]["containers"][1]
                                                 ["args"].__setitem__(1, "0.0.0.0")),
    "no-shutdown": lambda m: m["rayjob"]["spec"].pop("shutdownAfterJobFinishes"),
    "not-a-rayjob": lambda m: m["rayjob"].update(kind="RayService"),
}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_a_broken_copy_is_caught(manifests, name):
    broken = copy.deepcopy(manifests)
    BREAKAGES[name](broken)
    assert kuberay_problems(broken), f"{name}: the checks found nothing wrong"
