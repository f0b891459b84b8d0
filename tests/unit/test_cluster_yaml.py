"""cluster.yaml is valid YAML with the keys the Ray cluster launcher needs, and binds services to loopback."""

from __future__ import annotations

import yaml


def test_cluster_yaml_is_a_launcher_config(repo_root):
    cluster = yaml.safe_load((repo_root / "cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in cluster, key
    assert cluster["head_node_type"] in cluster["available_node_types"]
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert any("constraints.txt" in command for command in cluster["setup_commands"])
