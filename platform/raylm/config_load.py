"""Build a :class:`~raylm.config.RunConfig` from YAML and dotted overrides, with human errors.

Overrides use the dotted path of a key: ``train.lr=1e-3`` (on the command line
``--train.lr 1e-3`` or ``--train.lr=1e-3``). Values are read as YAML scalars,
so ``true``, ``null``, ``[0.9, 0.99]`` and ``3e-4`` mean what they look like;
string-typed keys keep the text as given.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from raylm.config import RunConfig
from raylm.config_errors import field_annotation, invalid, is_model_type
from raylm.errors import ConfigError

# Scalar keys outside any section (``name``, ``output_dir``): overridable as ``--name VALUE``.
M = TypeVar("M", bound=BaseModel)

TOP_LEVEL_KEYS = frozenset(k for k, f in RunConfig.model_fields.items() if not is_model_type(f.annotation))


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {seen[key].start_mark.line + 1})", mark
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; syntax errors name ``file:line:column``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}; check the path (it is relative to {Path.cwd()})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        hint = " (YAML indentation must use spaces, not tabs)" if "\\t" in problem or "tab" in problem else ""
        raise ConfigError(f"{where}: YAML syntax error: {problem}{hint}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got a {type(data).__name__}")
    return data


def parse_override_args(args: Iterable[str]) -> list[tuple[str, str]]:
    """Turn ``["--train.lr", "1e-3", "--model.arch=bert"]`` into ``[("train.lr", "1e-3"), ...]``."""
    args = list(args)
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected argument {arg!r}; overrides look like --section.key value")
        key = arg[2:]
        if "." not in key.split("=", 1)[0] and key.split("=", 1)[0] not in TOP_LEVEL_KEYS:
            raise ConfigError(_undotted_key_message(key.split("=", 1)[0]))
        if "=" in key:
            key, value = key.split("=", 1)
        elif i + 1 < len(args):
            i += 1
            value = args[i]
        else:
            raise ConfigError(f"override --{key} has no value; write --{key} VALUE")
        pairs.append((key, value))
        i += 1
    return pairs


def _undotted_key_message(key: str) -> str:
    """An override without a section: suggest the dotted keys it may have meant."""
    sections = {name: f.annotation for name, f in RunConfig.model_fields.items() if is_model_type(f.annotation)}
    paths = [f"{section}.{key_name}" for section, model in sections.items() for key_name in model.model_fields]
    matches = [p for p in paths if p.rsplit(".", 1)[1] == key] or difflib.get_close_matches(key, paths, n=3)
    hint = f"did you mean {' or '.join('--' + m for m in matches)}?" if matches else "e.g. --train.lr 1e-3"
    return (f"override --{key} must name a section and a key; {hint} "
            f"(top-level keys: {', '.join('--' + k for k in sorted(TOP_LEVEL_KEYS))})")


def apply_overrides(data: dict[str, Any], overrides: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``(dotted.key, value)`` set; string values are parsed as YAML."""
    merged = _deep_copy(data)
    for dotted, raw in overrides:
        parts = dotted.split(".")
        node = merged
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted}: {'.'.join(parts[: depth + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = _parse_value(parts, raw) if isinstance(raw, str) else raw
    return merged


def load_config(path: str | Path | None = None, overrides: Iterable[tuple[str, Any]] = ()) -> RunConfig:
    """Load ``path`` (or the defaults when None), apply overrides, validate once."""
    data = read_yaml(path) if path is not None else {}
    overrides = list(overrides)
    merged = apply_overrides(data, overrides)
    return validate(merged, str(path) if path else "<defaults>", {key for key, _ in overrides})


def load_file(path: Path, model: type[M], kind: str) -> M:
    """Read the YAML file ``path`` and validate it as ``model`` (a sweep or study file); every problem is
    listed in one :class:`ConfigError`, with the same hints as a run config's."""
    try:
        return model.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise invalid(exc, model, str(path), kind) from None


def validate(data: Mapping[str, Any], source: str = "<dict>", overridden: set[str] = frozenset()) -> RunConfig:
    """Validate a plain dict; every problem is listed in one :class:`ConfigError`."""
    try:
        return RunConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise invalid(exc, RunConfig, source, "config", overridden) from None


def _parse_value(parts: list[str], raw: str) -> Any:
    annotation = field_annotation(RunConfig, parts)
    if annotation in (str, typing.Optional[str]) and raw not in ("null", "~"):
        return raw
    try:
        return yaml.safe_load(raw) if raw != "" else raw
    except yaml.YAMLError:
        return raw


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def to_yaml(config: RunConfig) -> str:
    """The resolved config as YAML, sections in declaration order."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)
