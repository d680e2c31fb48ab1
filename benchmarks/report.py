"""What every benchmark file prints and writes: a figure in a table cell, and the JSON file."""

from __future__ import annotations

import json
import math
from typing import Any


def figure(value: float | None, spec: str) -> str:
    """`value` formatted by `spec`, or "-" for a figure that does not apply (None or NaN)."""
    return "-" if value is None or math.isnan(value) else format(value, spec)


def _plain(value: Any) -> Any:
    """NaN (a figure that does not apply) as null, so the file is strict JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(_plain(data), handle, indent=2, default=str, allow_nan=False)
        handle.write("\n")
