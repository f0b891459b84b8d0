"""`make demo`: the scaling study the platform exists for, on the embedded default.

For three compute budgets on the Python standard library's own sources, train an IsoFLOP grid
of small GPTs (3 budgets x 5 sizes, Ray Tune trials on a local Ray), fit Chinchilla's laws every
way, predict the compute-optimal model size, token count and loss for a budget 3x the largest,
verify the prediction with a real run, and log it all to MLflow in ./mlflow.db.

    python jobs/demo.py [--config STUDY.yaml] [--section.key VALUE ...]

The plain training demo is ``raylm train --config jobs/configs/gpt_tiny.yaml``.
"""

import sys
import time
from pathlib import Path

from raylm.errors import UserError

STUDY = Path(__file__).resolve().parent / "configs" / "study_demo.yaml"


def main(argv: list[str]) -> int:
    from raylm.config_load import parse_override_args
    from raylm.study.config import load_study
    from raylm.study.grid import build_grid, format_grid
    from raylm.study.run import run_study
    from raylm.study.summary import outcome_summary

    started = time.time()
    path = STUDY
    if argv[:1] == ["--config"]:
        path, argv = Path(argv[1]), argv[2:]
    try:
        study = load_study(path, parse_override_args(argv))
        grid = build_grid(study)
        cfg = study.config
        print(f"raylm demo: a scaling study on corpus '{study.base['data']['corpus']}': budgets "
              f"{', '.join(f'{b:.2g}' for b in cfg.budgets)} FLOPs x {cfg.points_per_budget} sizes, prediction "
              f"for {', '.join(f'{t:.2g}' for t in cfg.targets)}\n\n{format_grid(grid)}\n", flush=True)
        outcome = run_study(study)
    except UserError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 2
    print(outcome_summary(outcome))
    print(f"demo finished in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
