"""`make demo`: the scaling study the platform exists for, on the embedded default.

For three compute budgets on the Python standard library's own sources, train an IsoFLOP grid
of small GPTs (3 budgets x 5 sizes, Ray Tune trials on a local Ray), fit Chinchilla's laws every
way, predict the compute-optimal model size, token count and loss for a budget 3x the largest,
verify the prediction with a real run, and log it all to MLflow in ./mlflow.db.

    python jobs/demo.py [--config STUDY.yaml] [--verbose] [--section.key VALUE ...]

The console shows the grid, one line per finished run, the prediction and its verification; Ray, Tune,
Train, DeepSpeed and worker output goes to the study directory's ``logs/ray.log`` (``--verbose`` streams it).

The plain training demo is ``raylm train --config jobs/configs/gpt_tiny.yaml``.
"""

import sys
import time
from pathlib import Path

from raylm.errors import UserError

STUDY = Path(__file__).resolve().parent / "configs" / "study_demo.yaml"


def main(argv: list[str]) -> int:
    from raylm.config_load import parse_override_args
    from raylm.console import quiet_console
    from raylm.study.config import load_study
    from raylm.study.grid import build_grid
    from raylm.study.run import run_study
    from raylm.study.summary import outcome_summary

    started = time.time()
    path = STUDY
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    if argv[:1] == ["--config"]:
        path, argv = Path(argv[1]), argv[2:]
    try:
        study = load_study(path, parse_override_args(argv))
        print(grid_header(study, build_grid(study), path), flush=True)
        with quiet_console(verbose):
            outcome = run_study(study)
    except UserError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 2
    print(outcome_summary(outcome))
    print(f"demo finished in {time.time() - started:.0f} s")
    return 0


def grid_header(study, grid, path: Path) -> str:
    """What the demo trains, in two lines (the full table: raylm study plan FILE)."""
    cfg = study.config
    budgets = []
    for budget in cfg.budgets:
        sizes = [p.grid.params for p in grid if p.grid.budget == budget]
        budgets.append(f"{budget:.2g} (N {min(sizes):,}-{max(sizes):,})")
    return (f"raylm demo: a scaling study on corpus '{study.base['data']['corpus']}': {len(grid)} runs, then a "
            f"prediction for {', '.join(f'{t:.2g}' for t in cfg.targets)} FLOPs and its verification run (the full "
            f"grid: raylm study plan {path})\n  budgets (FLOPs) and sizes: {'; '.join(budgets)}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
