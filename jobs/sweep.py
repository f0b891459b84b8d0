"""Ray job entrypoint for sweeps:

    ray job submit --working-dir . -- python jobs/sweep.py --config jobs/configs/sweep_optimizers.yaml

Inside a Ray job, ``RAY_ADDRESS`` points at the cluster, so the sweep's trials run on it.
"""

import sys

from raylm.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
