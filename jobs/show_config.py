"""Ray job entrypoint that prints the resolved config and where it runs (a smoke test for job submission).

    ray job submit --working-dir . -- python jobs/show_config.py jobs/configs/gpt_tiny.yaml --train.lr 1e-3
"""

import platform
import sys

from raylm.cli import main

if __name__ == "__main__":
    print(f"# platform.system() = {platform.system()}, python {platform.python_version()}")
    sys.exit(main(["config", "show", *sys.argv[1:]]))
