"""Incremental decoders for streamed upstream bodies: Server-Sent Events (SSEDecoder, for OpenAI,
Anthropic and Gemini) and newline-delimited JSON (LineDecoder, for Ollama), and `decode_stream`,
which runs either over a body.

Bytes may arrive split anywhere (inside a UTF-8 character, between CR and LF); both decoders keep
what is incomplete for the next feed. Pure Python: no HTTP client, no grpc.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
from collections.abc import AsyncGenerator
from typing import Protocol, TypeVar

T = TypeVar("T")


class Decoder(Protocol[T]):
    """Bytes in, whole items out: `feed` returns what each piece completed, `close` the rest."""

    def feed(self, chunk: bytes) -> list[T]: ...

    def close(self) -> list[T]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One dispatched SSE event. `event` is "message" when the stream named none."""

    event: str = "message"
    data: str = ""
    id: str | None = None


class SSEDecoder:
    """Server-Sent Events as the WHATWG HTML spec parses them: CR, LF or CRLF line ends,
    `:` comment lines ignored, one optional space after the colon, multi-line data joined by LF."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._has_data = False

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += self._text.decode(chunk)
        return self._drain(final=False)

    def close(self) -> list[Event]:
        """End of body: a complete last line is parsed; an event never ended by a blank line
        is dropped, as the spec says."""
        self._buffer += self._text.decode(b"", final=True)
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[Event]:
        events: list[Event] = []
        buffer = self._buffer
        start = 0
        length = len(buffer)
        while start < length:
            cr = buffer.find("\r", start)
            lf = buffer.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                if cr + 1 == length and not final:
                    break  # a CR at the very end may be the first half of CRLF
                end, nxt = cr, cr + 2 if buffer.startswith("\n", cr + 1) else cr + 1
            else:
                end, nxt = lf, lf + 1
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = nxt
        self._buffer = buffer[start:]
        if final and self._buffer:
            self._line(self._buffer)
            self._buffer = ""
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            if not self._has_data:
                self._event = ""
                return None
            event = Event(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._has_data = "", [], False
            return event
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


class LineDecoder:
    """Newline-delimited records (Ollama's NDJSON): complete, non-blank lines, CR stripped."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += self._text.decode(chunk)
        *lines, self._buffer = self._buffer.split("\n")
        return [line.rstrip("\r") for line in lines if line.strip()]

    def close(self) -> list[str]:
        rest = (self._buffer + self._text.decode(b"", final=True)).strip()
        self._buffer = ""
        return [rest] if rest else []


async def decode_stream(
    body: AsyncGenerator[bytes, None], decoder: Decoder[T]
) -> AsyncGenerator[T, None]:
    """Every item `decoder` finds in a streamed body, as the bytes arrive, then what `close()`
    finds at its end. Closing this generator closes the body."""
    async with contextlib.aclosing(body) as data:
        async for chunk in data:
            for item in decoder.feed(chunk):
                yield item
    for item in decoder.close():
        yield item
