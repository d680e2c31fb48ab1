"""What every benchmark file prints and writes: a figure in a table cell, and the JSON file; and
which figures a result came back without (`empty_figures`), for the smoke test and the reports."""

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


def _empty(value: Any, positive: bool) -> bool:
    if value is None or isinstance(value, bool):
        return value is None
    if isinstance(value, int | float):
        return math.isnan(value) or (positive and value <= 0)
    if isinstance(value, dict | list | tuple | str):
        return positive and not value
    return False


def empty_figures(data: Any, paths: Any) -> list[str]:
    """Which of the figures at `paths` in a result came back empty: absent, None or NaN, and for
    a path ending in `+` also zero (or an empty collection): streams held, calls answered. A
    path is keys joined by dots (`probes.holding.p50_ms`); `*` stands for every value of a dict or
    every item of a list, and matching nothing counts as empty. What an aim is judged on goes
    here, so that a measurement that saw nothing fails loudly instead of reading as an aim not
    met (tests/packaging/test_benchmarks_smoke.py)."""
    missing: list[str] = []
    for path in paths:
        positive = path.endswith("+")
        keys = path.rstrip("+").split(".")
        found: list[tuple[str, Any]] = [("", data)]
        for key in keys:
            deeper: list[tuple[str, Any]] = []
            for where, value in found:
                if key == "*":
                    items = (
                        value.items()
                        if isinstance(value, dict)
                        else enumerate(value)
                        if isinstance(value, list | tuple)
                        else ()
                    )
                    deeper += [(f"{where}.{k}".lstrip("."), v) for k, v in items]
                elif isinstance(value, dict) and key in value:
                    deeper.append((f"{where}.{key}".lstrip("."), value[key]))
                else:
                    missing.append(f"{where}.{key}".lstrip(".") + " (absent)")
            found = deeper
        if not found and "*" in keys:
            missing.append(f"{path} (nothing matched)")
        missing += [where for where, value in found if _empty(value, positive)]
    return missing
