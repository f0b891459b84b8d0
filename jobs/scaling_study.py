"""Ray job entrypoint for scaling studies:

    ray job submit --working-dir . -- python jobs/scaling_study.py --config jobs/configs/study_demo.yaml

Inside a Ray job, ``RAY_ADDRESS`` points at the cluster, so the study's trials run on it.
"""

import sys

from raylm.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", *sys.argv[1:]]))
