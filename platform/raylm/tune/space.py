"""Search spaces over dotted config keys, checked before any trial starts.

A sweep file's ``search`` block maps a dotted key of the run config to one distribution::

    optim.name: {choice: [adamw, nadam, sgd, lion]}     # sampled uniformly
    train.warmup_steps: {grid: [10, 50]}                # every value, for every sample
    train.lr: {loguniform: [1.0e-4, 1.0e-2]}            # log-uniform in [low, high]
    train.grad_clip: {uniform: [0.5, 2.0]}
    train.seed: {randint: [0, 1000]}                    # integers in [low, high)

A range may depend on the value of a ``choice``/``grid`` key, one range per value::

    train.lr: {loguniform: {sgd: [0.01, 1.0], adamw: [1.0e-4, 1.0e-2]}, given: optim.name}

Such a key is drawn as a uniform number u (its own key ``<key>#u``) mapped into the range that the
other key's value selects, so random and grid generators stay seeded and reproducible.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from raylm.config import flatten
from raylm.config_load import apply_overrides, validate
from raylm.errors import ConfigError

KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
U_SUFFIX = "#u"
# Keys a sweep may not vary, with the reason: they decide the token shards or the trial's resources.
FIXED = {
    "data.": "the token shards are prepared once for the whole sweep",
    "train.seq_len": "the token shards are packed at one sequence length",
    "model.vocab_size": "the tokenizer is trained once for the whole sweep",
    "parallel.num_workers": "every trial reserves the same resources",
    "parallel.cpus_per_worker": "every trial reserves the same resources",
    "parallel.use_gpu": "every trial reserves the same resources",
    "tracking.": "every trial logs into the sweep's own MLflow parent run",
    "name": "trials are named by the sweep",
    "output_dir": "trials are stored under the sweep's directory",
}


def check_search(search: Mapping[str, Any], base: dict[str, Any]) -> dict[str, dict]:
    """Validate every entry of ``search`` against the base config; returns ``{key: {kind, values, given}}``."""
    if not isinstance(search, Mapping) or not search:
        raise ConfigError("search: give at least one key to vary, e.g. train.lr: {loguniform: [1.0e-4, 1.0e-2]}")
    valid = set(flatten(base))  # the base run validated, every key present
    specs = {}
    for key, spec in search.items():
        _check_key(key, valid)
        specs[key] = _check_spec(key, spec)
    for key, spec in specs.items():
        if spec["given"] is not None:
            _check_given(key, spec, specs)
        for value in _candidates(spec):
            _check_type(key, value, base)
    return specs


def _check_key(key: str, valid: set[str]) -> None:
    if key not in valid:
        close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.4)
        hint = f"; did you mean '{close[0]}'?" if close else "; keys are dotted paths such as train.lr or optim.name"
        raise ConfigError(f"search: unknown config key '{key}'{hint}")
    for prefix, reason in FIXED.items():
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            raise ConfigError(f"search: '{key}' cannot vary within a sweep ({reason}); set it in the base run")


def _check_spec(key: str, spec: Any) -> dict:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"search.{key}: expected a mapping such as {{choice: [a, b]}} or "
                          f"{{loguniform: [1.0e-4, 1.0e-2]}}, got {spec!r}")
    kinds = [k for k in spec if k in KINDS]
    unknown = [k for k in spec if k not in KINDS and k != "given"]
    if unknown or len(kinds) != 1:
        raise ConfigError(f"search.{key}: give exactly one of {', '.join(KINDS)} (and optionally 'given'); "
                          f"got {', '.join(map(str, spec)) or 'nothing'}")
    kind, values, given = kinds[0], spec[kinds[0]], spec.get("given")
    if given is not None:
        if kind in ("choice", "grid") or not isinstance(values, Mapping):
            raise ConfigError(f"search.{key}: 'given: {given}' needs a range per value, e.g. "
                              f"{kind}: {{adamw: [1.0e-4, 1.0e-2], sgd: [0.01, 1.0]}}")
        return {"kind": kind, "values": {str(v): _check_range(key, kind, r, v) for v, r in values.items()},
                "given": given}
    if kind in ("choice", "grid"):
        if not isinstance(values, list) or not values:
            raise ConfigError(f"search.{key}: {kind} needs a non-empty list of values, e.g. {kind}: [a, b]")
        return {"kind": kind, "values": list(values), "given": None}
    return {"kind": kind, "values": _check_range(key, kind, values), "given": None}


def _check_range(key: str, kind: str, bounds: Any, label: Any = None) -> list:
    where = f"search.{key}" + (f" (for {label})" if label is not None else "")
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)):
        raise ConfigError(f"{where}: {kind} needs [low, high] as two numbers, got {bounds!r}")
    low, high = bounds
    if not low < high:
        raise ConfigError(f"{where}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs positive bounds (it samples log(value)), got [{low}, {high}];"
                          f" use uniform for ranges that include 0 or negative values")
    if kind == "randint" and not all(isinstance(b, int) for b in bounds):
        raise ConfigError(f"{where}: randint needs integer bounds, got [{low}, {high}]")
    return [low, high]


def _check_given(key: str, spec: dict, specs: dict) -> None:
    given = spec["given"]
    other = specs.get(given)
    if other is None or other["kind"] not in ("choice", "grid"):
        raise ConfigError(f"search.{key}: given: {given} must name another search key drawn by choice or grid")
    missing = [str(v) for v in other["values"] if str(v) not in spec["values"]]
    if missing:
        raise ConfigError(f"search.{key}: no range for {given} = {', '.join(missing)}; give one for every value")


def _candidates(spec: dict) -> list:
    """Values that stand for the whole distribution in the type check (list items or range bounds)."""
    if spec["kind"] in ("choice", "grid"):
        return spec["values"]
    ranges = spec["values"].values() if spec["given"] else [spec["values"]]
    return [bound for bounds in ranges for bound in bounds]


def _check_type(key: str, value: Any, base: dict) -> None:
    try:
        validate(apply_overrides(base, [(key, value)]), "sweep")
    except ConfigError as exc:
        detail = str(exc).split("\n", 1)[-1].strip()
        raise ConfigError(f"search.{key}: the value {value!r} does not fit the run config: {detail}") from None


def enumerated(spec: dict, algorithm: str) -> bool:
    """Whether Tune enumerates every value of the key (a grid, or a choice under the grid search)."""
    return spec["kind"] == "grid" or (spec["kind"] == "choice" and algorithm == "grid")


def tune_space(specs: dict[str, dict], algorithm: str) -> dict[str, Any]:
    """The Tune ``param_space``: one flat entry per dotted key (and one ``<key>#u`` per conditional key)."""
    from ray import tune

    space: dict[str, Any] = {}
    for key, spec in specs.items():
        kind, values = spec["kind"], spec["values"]
        if algorithm == "optuna" and (kind == "grid" or spec["given"]):
            raise ConfigError(f"search.{key}: the optuna search algorithm takes no grid or 'given' entries; "
                              "use choice and plain ranges, or search_alg: random")
        if algorithm == "grid" and kind not in ("choice", "grid"):
            raise ConfigError(f"search.{key}: search_alg grid enumerates lists only; use choice/grid, or "
                              "search_alg: random to sample ranges")
        if spec["given"]:
            space[key + U_SUFFIX] = tune.uniform(0.0, 1.0)
            space[key] = tune.sample_from(_conditional(key, spec))
        elif enumerated(spec, algorithm):
            space[key] = tune.grid_search(values)
        elif kind == "choice":
            space[key] = tune.choice(values)
        elif kind == "uniform":
            space[key] = tune.uniform(*values)
        elif kind == "loguniform":
            space[key] = tune.loguniform(*values)
        else:
            space[key] = tune.randint(*values)
    return space


class _conditional:
    """Maps the key's own uniform draw into the range chosen by the ``given`` key's value (picklable)."""

    def __init__(self, key: str, spec: dict):
        self.key, self.given, self.kind, self.ranges = key, spec["given"], spec["kind"], spec["values"]

    def __call__(self, spec) -> float | int:
        config = spec["config"] if "config" in spec else spec
        low, high = self.ranges[str(config[self.given])]
        return map_unit(config[self.key + U_SUFFIX], self.kind, low, high)


def map_unit(u: float, kind: str, low: float, high: float) -> float | int:
    """u in [0, 1) to a value of ``kind`` in [low, high] (randint: [low, high))."""
    if kind == "loguniform":
        return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    if kind == "randint":
        return int(low + math.floor(u * (high - low)))
    return low + u * (high - low)


def sampled_values(trial_config: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's sampled keys and values, without the helper draws."""
    return {k: v for k, v in trial_config.items() if not k.endswith(U_SUFFIX)}


def apply_sample(base: dict[str, Any], trial_config: Mapping[str, Any]) -> dict[str, Any]:
    """The base run with the trial's sampled values set."""
    return apply_overrides(base, list(sampled_values(trial_config).items()))
