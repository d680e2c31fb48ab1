"""What the fake upstream does with one request: the scriptable behaviours, and byte-splitting
helpers for awkward writes. Vendor-neutral; wire.py renders them per vendor."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Fail:
    """An HTTP error with the vendor's real error body. Also used, as `Reply(error=...)`, for the
    error event a vendor sends in the middle of a stream (the status then only picks defaults)."""

    status: int = 500
    message: str | None = None  # default: the vendor's usual text for this status
    kind: str | None = None  # OpenAI `error.type` / Anthropic `error.type`; default from status
    code: str | None = None  # OpenAI `error.code`, e.g. "insufficient_quota"
    retry_after: str | None = None  # `Retry-After` header value
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Call:
    """A tool call in a reply: `arguments` is the JSON text (Anthropic and Ollama send it as an
    object; streams send it in two fragments where the vendor streams arguments)."""

    id: str = "call_fake_1"
    name: str = "get_weather"
    arguments: str = '{"city": "Oslo"}'


@dataclasses.dataclass(frozen=True)
class Reply:
    """A normal answer. Streams send `text` as `chunks` content events between the vendor's
    opening and closing events; the options below break that stream in realistic ways."""

    text: str = "Hello from the fake upstream."
    chunks: int = 3
    finish: str = "stop"  # neutral: stop | length | content_filter | tool_calls
    prompt_tokens: int = 11
    completion_tokens: int | None = None  # default: `chunks`
    model: str | None = None  # default: the model named in the request
    chunk_delay: float = 0.0  # seconds before each content event
    stall_after: int | None = None  # after N content events go silent until the client leaves
    pause_after: int | None = None  # after N content events wait for FakeUpstream.release()
    drop_after: int | None = None  # after N content events abort the TCP connection
    error_after: int | None = None  # after N content events send the vendor's error event...
    error: Fail = Fail(500)  # ...describing this error
    end_early: bool = False  # end the body cleanly after the content, without closing events
    # Seconds between the last event and the end of the body (the chunked terminator), sent
    # apart as uvicorn-served upstreams (vLLM, LiteLLM) do; None: in one write with the last event.
    end_apart: float | None = None
    done_marker: bool = True  # OpenAI only: send `data: [DONE]`
    comments: bool = False  # SSE `: keep-alive` comments between events (NDJSON: blank lines)
    crlf: bool = False  # CRLF line endings
    awkward: bool = False  # write the body in awkward pieces (see awkward_pieces)
    piece_delay: float = 0.002  # seconds between awkward pieces, so they arrive apart
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tool_calls: tuple[Call, ...] = ()  # after the text (an empty text sends no text at all)
    reasoning: str = ""  # reasoning text before the answer (OpenAI: a compatible server's)
    cached_tokens: int = 0  # of the prompt, served from the vendor's prompt cache
    reasoning_tokens: int = 0  # of the completion, spent on reasoning
    vectors: int | None = None  # embeddings: answer with this many vectors; None: one per input
    # embeddings: what each vector is made of: "length" (fake_vector: the input's length and
    # index, then 0.25s) or "words" (word_vector: its words, so paraphrases land close)
    vectors_by: str = "length"

    @property
    def pieces(self) -> list[str]:
        if not self.text and (self.tool_calls or self.reasoning):
            return []
        return split_text(self.text, self.chunks)

    @property
    def output_tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.chunks


@dataclasses.dataclass(frozen=True)
class Hang:
    """Wait before sending headers: `seconds`, or (None) until the client goes away; then `then`."""

    seconds: float | None = None
    then: Reply | Fail = Reply()


@dataclasses.dataclass(frozen=True)
class Malformed:
    """Status 200 with a body that is not JSON; a stream gets one broken event after `after`
    good content events, then carries on normally."""

    after: int = 1


@dataclasses.dataclass(frozen=True)
class Raw:
    """Exactly these bytes, written piece by piece, `piece_delay` seconds apart."""

    pieces: tuple[bytes, ...]
    status: int = 200
    content_type: str = "text/event-stream"
    piece_delay: float = 0.002


Behaviour = Reply | Fail | Hang | Malformed | Raw


def split_text(text: str, n: int) -> list[str]:
    """`text` in `n` contiguous pieces of near-equal length (fewer if the text is shorter)."""
    n = max(1, min(n, len(text))) if text else 1
    return [text[i * len(text) // n : (i + 1) * len(text) // n] for i in range(n)]


def awkward_cuts(data: bytes) -> list[int]:
    """Offsets that cut inside every multi-byte UTF-8 character, inside every `data:` and
    `event:` field name, and between every CR and LF."""
    cuts: set[int] = set()
    for i, byte in enumerate(data):
        if byte & 0xC0 == 0x80:  # a continuation byte: cutting before it splits a character
            cuts.add(i)
    for needle, offset in ((b"data:", 2), (b"event:", 2), (b"\r\n", 1)):
        start = data.find(needle)
        while start != -1:
            cuts.add(start + offset)
            start = data.find(needle, start + 1)
    return sorted(c for c in cuts if 0 < c < len(data))


def awkward_pieces(data: bytes) -> list[bytes]:
    bounds = [0, *awkward_cuts(data), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]
