"""A scriptable fake LLM upstream (OpenAI, Azure OpenAI, Anthropic, Ollama, Gemini) for adapter
tests."""

from .behaviours import (
    Behaviour,
    Call,
    Fail,
    Hang,
    Malformed,
    Raw,
    Reply,
    awkward_cuts,
    awkward_pieces,
    split_text,
)
from .server import CHAT_ROUTES, ROUTES, FakeUpstream, RecordedRequest

__all__ = [
    "CHAT_ROUTES",
    "ROUTES",
    "Behaviour",
    "Call",
    "Fail",
    "FakeUpstream",
    "Hang",
    "Malformed",
    "Raw",
    "RecordedRequest",
    "Reply",
    "awkward_cuts",
    "awkward_pieces",
    "split_text",
]
