"""JSON without NaN: what every report, fit file and run artifact is written through."""

from __future__ import annotations

import math


def json_safe(value):
    """Replace NaN and infinities (not valid JSON) by None, recursively; numpy scalars become floats."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
