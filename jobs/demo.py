"""`make demo`: the main job. Until training lands it shows what exists, without faking a result."""

import subprocess
import sys

STEPS = [
    ["config", "show", "jobs/configs/gpt_tiny.yaml", "--train.lr", "1e-3"],
]


def main() -> int:
    print("raylm demo: training is not available yet; showing the resolved demo config instead.\n")
    for args in STEPS:
        print("$ raylm " + " ".join(args))
        result = subprocess.run([sys.executable, "-m", "raylm.cli", *args])
        if result.returncode:
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
