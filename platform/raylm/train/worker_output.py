"""What a training worker leaves for its driver: progress lines and the divergence marker file."""

from __future__ import annotations

import sys

DIVERGED_FILE = "diverged.txt"  # written by rank 0 of the workers (raylm.train.loop) when the loss is not finite


def worker_print(message: str) -> None:
    """One progress line in the driver's output. Ray Train's patched ``print`` writes a line to
    ``sys.stdout`` twice (the stream and its logger); ``sys.__stdout__`` reaches the driver once."""
    print(f"[raylm] {message}", file=sys.__stdout__, flush=True)
