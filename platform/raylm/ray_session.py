"""Connecting to Ray: the cluster named by ``--address`` / ``$RAY_ADDRESS``, or the embedded default."""

from __future__ import annotations

import logging
import os


def connect_ray(address: str | None = None) -> None:
    """Join ``address`` / ``$RAY_ADDRESS``, or start a local Ray bound to 127.0.0.1 with no
    dashboard; nothing happens when Ray is already initialised in this process."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
