"""Read and write scaling-study CSV files: columns params, tokens, loss and optionally flops, budget.

``tokens`` may be left out when ``flops`` is given: D = C / (6 N) (Hoffmann et al. 2022, section 3).
``budget`` is the nominal compute label a ladder groups its runs by (published ladders label runs
by budget while their 6ND differs from it by up to tens of percent): runs are then grouped by it
exactly. ``experiment`` names the ladder a row belongs to when one file holds several
(:func:`read_ladders`); other columns (source, provenance...) are ignored.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from raylm.errors import UserError
from raylm.scaling.data import ScalingData
from raylm.scaling.laws import tokens_for_budget

REQUIRED = ("params", "loss")
OPTIONAL = ("tokens", "flops", "budget")
EXPERIMENT = "experiment"


def read_csv(path: str | Path, experiment: str | None = None) -> ScalingData:
    """Load and validate a CSV of runs; every problem is a :class:`UserError` naming the file, column and line.

    With an ``experiment`` column holding several ladders, ``experiment`` selects one (required then).
    """
    ladders = read_ladders(path)
    if experiment is not None:
        if experiment not in ladders:
            raise UserError(f"{path}: no experiment {experiment!r}; it holds {', '.join(ladders)}")
        return ladders[experiment]
    if len(ladders) > 1:
        raise UserError(f"{path} holds {len(ladders)} experiments ({', '.join(ladders)}); choose one "
                        "(--experiment NAME)")
    return next(iter(ladders.values()))


def read_ladders(path: str | Path) -> dict[str, ScalingData]:
    """Every ladder of a CSV by its ``experiment`` column (the file's stem when there is none), in file order."""
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
        group_col = names.index(EXPERIMENT) if EXPERIMENT in names else None
        groups: dict[str, dict[str, list[float]]] = {}
        for line_no, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            key = path.stem if group_col is None else (row[group_col].strip() if group_col < len(row) else "")
            if not key:
                raise UserError(f"{path}:{line_no}: empty value in column '{EXPERIMENT}'")
            columns = groups.setdefault(key, {name: [] for name in index})
            for name, col in index.items():
                columns[name].append(_number(row, col, name, line_no, path))
    if not groups:
        raise UserError(f"{path}: no runs after the header row")
    return {key: _as_data(columns, f"{path} ({key})" if group_col is not None else str(path))
            for key, columns in groups.items()}


def _as_data(columns: dict[str, list[float]], source: str) -> ScalingData:
    if "tokens" not in columns:
        columns["tokens"] = list(tokens_for_budget(columns["flops"], columns["params"]))
    compute = columns.get("budget", columns.get("flops"))
    return ScalingData.from_arrays(columns["params"], columns["tokens"], columns["loss"], compute, source=source)


def has_budget_labels(path: str | Path) -> bool:
    """Whether the CSV labels its runs with a nominal ``budget`` column."""
    with Path(path).open(newline="") as handle:
        header = next(csv.reader(handle), None) or []
    return "budget" in [name.strip().lower() for name in header]


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
    if "tokens" not in names and "budget" in names and "flops" not in names:
        missing[-1] = "tokens (a budget label does not give a run's tokens)"
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
