"""Ray job entrypoint: build the token dataset of a config (``raylm tokenize`` on the cluster).

    ray job submit --working-dir . -- python jobs/tokenize_corpus.py jobs/configs/gpt_tiny.yaml --data.max_docs 200

Inside a job, ``RAY_ADDRESS`` points at the cluster, so the pipeline runs on its CPUs.
"""

import sys

from raylm.cli import main

if __name__ == "__main__":
    sys.exit(main(["tokenize", *sys.argv[1:]]))
