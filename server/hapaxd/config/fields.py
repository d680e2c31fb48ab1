"""The value types settings are made of, shared by schema.py and provider_types.py: durations
(seconds, or text such as "500ms"), non-empty text, version strings, and the frozen base model
every section extends.

Imports nothing of hapaxd.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _duration(value: Any) -> Any:
    """Seconds as a number, or a string such as "500ms", "30s", "2m"."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("not a duration (use seconds or e.g. 500ms, 30s, 2m)")
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(_duration), Field(gt=0, allow_inf_nan=False)]
Delay = Annotated[float, BeforeValidator(_duration), Field(ge=0, allow_inf_nan=False)]


def _text(value: Any) -> Any:
    """YAML reads an unquoted 2024-10-21 as a date; a version option means the text."""
    return value.isoformat() if isinstance(value, datetime.date) else value


Text = Annotated[str, StringConstraints(min_length=1)]
Version = Annotated[str, StringConstraints(min_length=1), BeforeValidator(_text)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
