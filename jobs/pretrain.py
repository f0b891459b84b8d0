"""Ray job entrypoint for training:

    ray job submit --working-dir . -- python jobs/pretrain.py --config jobs/configs/gpt_tiny.yaml

Inside a Ray job, ``RAY_ADDRESS`` points at the cluster, so the job joins it.
"""

import sys

from raylm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
