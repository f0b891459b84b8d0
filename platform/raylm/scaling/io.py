"""Read and write scaling-study CSV files: columns params, tokens, loss and optionally flops.

``tokens`` may be left out when ``flops`` is given: D = C / (6 N) (Hoffmann et al. 2022, section 3).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from raylm.errors import UserError
from raylm.scaling.data import ScalingData
from raylm.scaling.laws import tokens_for_budget

REQUIRED = ("params", "loss")
OPTIONAL = ("tokens", "flops")


def read_csv(path: str | Path) -> ScalingData:
    """Load and validate a CSV of runs; every problem is a :class:`UserError` naming the file, column and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: the file is empty; expected a header row params,tokens,loss[,flops]")
        names = [name.strip().lower() for name in header]
        index = _column_index(names, path)
        columns: dict[str, list[float]] = {name: [] for name in index}
        for line_no, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            for name, col in index.items():
                columns[name].append(_number(row, col, name, line_no, path))
    if "tokens" not in columns:
        columns["tokens"] = list(tokens_for_budget(columns["flops"], columns["params"]))
    return ScalingData.from_arrays(
        columns["params"], columns["tokens"], columns["loss"], columns.get("flops"), source=str(path)
    )


def write_csv(data: ScalingData, path: str | Path) -> Path:
    """Write ``data`` as params,tokens,loss,flops with full float precision."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.column_stack([data.params, data.tokens, data.loss, data.flops])
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["params", "tokens", "loss", "flops"])
        writer.writerows([[repr(float(v)) for v in row] for row in rows])
    return path


def _column_index(names: list[str], path: Path) -> dict[str, int]:
    duplicated = sorted({name for name in names if names.count(name) > 1 and name})
    if duplicated:
        raise UserError(f"{path}: duplicate column(s) {', '.join(duplicated)}")
    missing = [name for name in REQUIRED if name not in names]
    if "tokens" not in names and "flops" not in names:
        missing.append("tokens (or flops)")
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(names) or 'none'}. "
            "Expected a header row params,tokens,loss (flops optional)"
        )
    return {name: names.index(name) for name in REQUIRED + OPTIONAL if name in names}


def _number(row: list[str], col: int, name: str, line_no: int, path: Path) -> float:
    cell = row[col].strip() if col < len(row) else ""
    if not cell:
        raise UserError(f"{path}:{line_no}: empty value in column '{name}'")
    try:
        value = float(cell)
    except ValueError:
        raise UserError(f"{path}:{line_no}: column '{name}' is not a number: {cell!r}") from None
    if not np.isfinite(value):
        raise UserError(f"{path}:{line_no}: column '{name}' is {cell!r}; values must be finite")
    if value <= 0:
        raise UserError(f"{path}:{line_no}: column '{name}' must be positive, got {cell}")
    return value
