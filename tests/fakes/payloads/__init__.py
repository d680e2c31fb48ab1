"""Vendor payloads in their real shapes, one JSON file each (`<vendor>/<name>.json`), taken from
the vendors' API references: the one copy both users read. The fake upstream
(tests/fakes/upstream/wire.py) renders its answers, stream frames, errors and model lists from
them, filling in the reply's text, model, ids and counts; the wire tests
(tests/providers/test_wire.py) feed them, or variants built from them, to the adapters' pure
functions. Anthropic's stream is one file per event type (`message_start` ... `message_stop`);
its mid-stream error event is `stream_error` (`error` is the HTTP error body).

    body = load("openai", "completion")     # a fresh copy: change it freely
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


@functools.cache
def _read(vendor: str, name: str) -> Any:
    return json.loads((HERE / vendor / f"{name}.json").read_text(encoding="utf-8"))


def load(vendor: str, name: str) -> Any:
    """The payload `<vendor>/<name>.json`, as a new object each call."""
    return copy.deepcopy(_read(vendor, name))
