"""The gateway's own vocabulary: requests, messages, completions, chunks and usage.

Plain dataclasses shared by every layer. Imports nothing from grpc, protobuf or the HTTP client.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


class Role(enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class FinishReason(enum.Enum):
    UNSPECIFIED = "unspecified"
    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclasses.dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated request. `model` is the logical name until the router resolves it."""

    model: str
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    user: str = ""
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False, compare=False)
    request_id: str = dataclasses.field(default="", hash=False, compare=False)

    def with_model(self, model: str) -> CompletionRequest:
        return dataclasses.replace(self, model=model)

    def shape_key(self) -> tuple[object, ...]:
        """Everything that shapes the answer; request id and metadata do not."""
        return (
            self.model,
            self.messages,
            self.max_tokens,
            self.temperature,
            self.top_p,
            self.stop,
            self.user,
        )

    def is_deterministic(self) -> bool:
        """Whether two identical requests ask for the same answer rather than two samples.

        Only greedy decoding (temperature explicitly 0) qualifies: an unset temperature means the
        vendor's default sampling. A sampling seed, once the contract has one, belongs here too.
        """
        return self.temperature == 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer from one provider."""

    text: str
    finish_reason: FinishReason = FinishReason.STOP
    usage: Usage = Usage()
    upstream_model: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a streamed answer. The last one carries finish_reason and usage when known."""

    delta: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    upstream_model: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """What served an answer: the router's account of the call."""

    provider: str
    upstream_model: str
    attempts: int  # upstream attempts made, the successful one included
    shared: bool = False  # this caller joined an identical call in flight (core/dedup.py)
    upstream_seconds: float = 0.0  # time spent waiting on upstreams, every attempt included
