"""Ray job entrypoint: build the token dataset of a config (``raylm tokenize`` on the cluster).

    ray job submit --working-dir . -- python jobs/tokenize.py jobs/configs/gpt_tiny.yaml --data.max_docs 200

Inside a job, ``RAY_ADDRESS`` points at the cluster, so the pipeline runs on its CPUs.
"""

import os
import sys

# This file is named like the stdlib's ``tokenize``: drop its folder from the import path before
# anything imports ``tokenize`` (so also Ray, which copies the script's folder to its workers' path).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from raylm.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["tokenize", *sys.argv[1:]]))
