"""Regenerate ``jobs/data/synthetic_isoflop.csv``: an IsoFLOP study drawn from a known law.

Nine Chinchilla budgets (6e18 ... 3e21 FLOPs), nine model sizes per budget spread 16x around the
compute-optimal size of the Besiroglu et al. (2024) refit, 0.5% log-normal loss noise, seed 0.
Try it with: ``raylm fit --csv jobs/data/synthetic_isoflop.csv --budget 1e22 --out fit_out``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from raylm.scaling.io import write_csv
from raylm.scaling.synthetic import synthetic_isoflop

DEFAULT_PATH = Path(__file__).with_name("synthetic_isoflop.csv")


def main(path: str | Path = DEFAULT_PATH) -> Path:
    return write_csv(synthetic_isoflop(seed=0), path)


if __name__ == "__main__":
    print(main(*sys.argv[1:]))
