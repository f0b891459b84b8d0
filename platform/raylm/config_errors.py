"""One error formatter for every config file (run, sweep, study): each problem on its own line, with hints.

Pydantic's errors name a location and a type; users need the key they wrote, what was expected and
the closest valid key when they mistyped one. The functions take the root model class, so run,
sweep and study files get the same messages (and this module imports no config of its own).
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from raylm.errors import ConfigError


def is_model_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def invalid(exc: ValidationError, root: type[BaseModel], source: str, kind: str = "config",
            overridden: Iterable[str] = ()) -> ConfigError:
    """A :class:`ConfigError` listing every problem of ``exc``: ``"{source}: invalid {kind}:"`` then one per line."""
    problems = [describe(err, root, set(overridden)) for err in exc.errors()]
    return ConfigError(f"{source}: invalid {kind}:\n  " + "\n  ".join(problems))


def describe(err: Mapping[str, Any], root: type[BaseModel], overridden: set[str] = frozenset()) -> str:
    """One problem: the dotted key, what is wrong, what was given and expected, the closest valid key."""
    loc = [str(part) for part in err["loc"]]
    dotted = ".".join(loc)
    origin = f" (from override --{dotted})" if dotted in overridden else ""
    if err["type"] == "extra_forbidden":
        section = section_at(root, loc[:-1])
        valid = list(section.model_fields) if section else []
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
        where = f"section '{'.'.join(loc[:-1])}'" if len(loc) > 1 else "the top level"
        return f"unknown key '{loc[-1]}' in {where}{origin}{hint}"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("value_error", "assertion_error") or not loc:
        return f"{dotted or 'config'}: {message}"
    expected = expected_type(root, loc)
    value = err.get("input")
    return f"{dotted}{origin}: {message}; got {value!r} ({type(value).__name__}), expected {expected}"


def section_at(root: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    """The pydantic model class found by walking field names from ``root``."""
    model: type[BaseModel] = root
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not is_model_type(field.annotation):
            return None
        model = field.annotation
    return model


def field_annotation(root: type[BaseModel], parts: list[str]) -> Any:
    section = section_at(root, parts[:-1])
    field = section.model_fields.get(parts[-1]) if section else None
    return field.annotation if field else None


def expected_type(root: type[BaseModel], loc: list[str]) -> str:
    annotation = field_annotation(root, loc)
    if annotation is None:
        return "a value of the documented type"
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if typing.get_origin(annotation) is typing.Union:
        return " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
    return getattr(annotation, "__name__", str(annotation))
