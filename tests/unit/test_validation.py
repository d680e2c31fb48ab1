"""Request validation names every bad field."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hapaxd.core.errors import InvalidRequest
from hapaxd.core.types import Role
from hapaxd.core.validation import Limits, build_request

BASE: dict[str, Any] = dict(
    model="",
    messages=[(Role.USER, "hi")],
    prompt="",
    max_tokens=None,
    temperature=None,
    top_p=None,
    stop=[],
    user="",
    metadata={},
)


def fields(**change: Any) -> list[str]:
    with pytest.raises(InvalidRequest) as caught:
        build_request(**{**BASE, **change}, limits=Limits(max_content_chars=100, max_messages=3))
    return [v.field for v in caught.value.violations]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"messages": [], "prompt": ""}, ["messages"]),
        ({"messages": [(None, "x")]}, ["messages[0].role"]),
        ({"messages": [(Role.USER, "")]}, ["messages[0].content"]),
        ({"max_tokens": -1}, ["max_tokens"]),
        ({"max_tokens": 0}, ["max_tokens"]),
        ({"temperature": 2.5}, ["temperature"]),
        ({"temperature": -0.1}, ["temperature"]),
        ({"temperature": math.nan}, ["temperature"]),
        ({"top_p": math.inf}, ["top_p"]),
        ({"messages": [(Role.USER, "x" * 101)]}, ["messages"]),
        ({"messages": [], "prompt": "x" * 101}, ["prompt"]),
        ({"messages": [(Role.USER, "x")] * 4}, ["messages"]),
        ({"stop": [""]}, ["stop[0]"]),
        ({"model": "m" * 300}, ["model"]),
        ({"max_tokens": -5, "temperature": math.nan}, ["max_tokens", "temperature"]),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], expected: list[str]) -> None:
    assert fields(**change) == expected


def test_zero_temperature_is_a_real_value_and_prompt_becomes_a_user_message() -> None:
    request = build_request(**{**BASE, "messages": [], "prompt": "p", "temperature": 0.0})
    assert request.temperature == 0.0
    assert [(m.role, m.content) for m in request.messages] == [(Role.USER, "p")]
