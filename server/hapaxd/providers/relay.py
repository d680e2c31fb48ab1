"""What every network adapter shares once the HTTP client has answered: reading JSON met inside a
stream, turning an error found in a 200 body into an UpstreamError, and the loop that relays a
streamed body as Chunks.

Each vendor module supplies only what differs: its decoder (SSE or NDJSON) and a stream state with
`on_item` (what one decoded item yields), `done` (the vendor's end-of-stream marker was seen) and
`at_end` (the last chunk when the body ends without that marker, or None if that is an error).
Pure Python: no HTTP client, no grpc.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol, TypeVar

from hapaxd.core.errors import UpstreamError, stream_ended_early
from hapaxd.core.failures import FailureClass
from hapaxd.core.types import Chunk
from hapaxd.providers.framing import Decoder, decode_stream
from hapaxd.providers.http_client import StreamBody

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


def stream_json(provider: str, text: str) -> Any:
    """One JSON value from a stream item; a TRANSIENT UpstreamError if it is not JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UpstreamError(
            FailureClass.TRANSIENT, provider, f"malformed JSON in stream: {exc}"
        ) from None


def error_in_body(
    provider: str,
    failure: FailureClass,
    message: str,
    *,
    in_stream: bool = False,
    retry_after: float | None = None,
) -> UpstreamError:
    """An error object the vendor sent with HTTP 200, as a whole answer or inside a stream
    (`retry_after`: a wait the object itself names, as Gemini's RetryInfo does)."""
    return UpstreamError(
        failure,
        provider,
        f"error in stream: {message}" if in_stream else message,
        retry_after=retry_after,
    )


def decode_answer(provider: str, answer: Any, from_wire: Callable[[Any], T]) -> T:
    """A whole 200 answer read by the vendor's `from_wire`; TRANSIENT if it is not one."""
    try:
        return from_wire(answer)
    except ValueError as exc:
        raise UpstreamError(
            FailureClass.TRANSIENT, provider, f"malformed response: {exc}"
        ) from None


class StreamState(Protocol[T_contra]):
    done: bool

    def on_item(self, item: T_contra) -> list[Chunk]: ...

    def at_end(self) -> Chunk | None: ...


async def relay(
    provider: str, upstream: StreamBody, decoder: Decoder[T], state: StreamState[T]
) -> AsyncGenerator[Chunk, None]:
    """Chunks from a streamed body, ending with the one that carries finish_reason and usage."""
    sent = 0  # chunks passed on, for the error if the body ends early
    # aclosing(): leaving early (done, error, cancelled caller) closes the upstream body now.
    async with contextlib.aclosing(decode_stream(upstream.chunks, decoder)) as items:
        async for item in items:
            chunks = state.on_item(item)
            if state.done:
                upstream.finished()  # before the last chunk goes out: see StreamBody
            for chunk in chunks:
                sent += 1
                yield chunk
            if state.done:
                return
    final = state.at_end()
    if final is None:
        raise stream_ended_early(provider, sent)
    yield final
