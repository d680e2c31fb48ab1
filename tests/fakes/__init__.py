"""Test doubles shared by the test suites: a real-HTTP fake LLM upstream and its fixtures."""

from .upstream import (
    Behaviour,
    Fail,
    FakeUpstream,
    Hang,
    Malformed,
    Raw,
    RecordedRequest,
    Reply,
    awkward_pieces,
    split_text,
)

__all__ = [
    "Behaviour",
    "Fail",
    "FakeUpstream",
    "Hang",
    "Malformed",
    "Raw",
    "RecordedRequest",
    "Reply",
    "awkward_pieces",
    "split_text",
]
