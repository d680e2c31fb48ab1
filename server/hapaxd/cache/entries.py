"""A stored answer: always in stream form, the chunks as the caller received them (a unary
answer is one chunk), so a hit on a stream replays them with their original boundaries (text,
reasoning, tool-call fragments, the last chunk with its finish reason and usage), and either
form can answer either kind of call (`completion`, `chunks`).

Encoded as compact JSON with a format number; `decode` raises EntryError for bytes that are not
an entry this version wrote (another version's, or damaged), which the cache counts as a miss.
Plain Python.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from hapaxd.core.types import (
    Chunk,
    Completion,
    FinishReason,
    ToolCall,
    ToolCallDelta,
    Usage,
)

FORMAT = 1


class EntryError(ValueError):
    """Stored bytes that are not an entry this version can read."""


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    chunks: tuple[Chunk, ...]
    provider: str  # what answered when it was stored
    upstream_model: str
    cost_nanos: int | None  # what the answer cost then (None: unpriced): what a hit saves
    stored_at: float  # unix seconds
    # The answer as one Completion, once made (an entry in memory answers many hits).
    whole: Completion | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def usage(self) -> Usage:
        """The usage the provider reported for the original answer."""
        for chunk in reversed(self.chunks):
            if chunk.usage is not None:
                return chunk.usage
        return Usage()

    @property
    def finish(self) -> FinishReason:
        for chunk in reversed(self.chunks):
            if chunk.finish_reason is not None:
                return chunk.finish_reason
        return FinishReason.UNSPECIFIED

    def completion(self) -> Completion:
        """The answer as one Completion: the chunks' text, reasoning and tool calls put
        together (a call's id and name from its first piece, its arguments concatenated)."""
        if self.whole is not None:
            return self.whole
        calls: dict[int, list[str]] = {}
        for chunk in self.chunks:
            for piece in chunk.tool_calls:
                found = calls.setdefault(piece.index, ["", "", ""])
                found[0] = found[0] or piece.id
                found[1] = found[1] or piece.name
                found[2] += piece.arguments
        whole = Completion(
            text="".join(c.delta for c in self.chunks),
            finish_reason=self.finish,
            usage=self.usage,
            upstream_model=self.upstream_model,
            tool_calls=tuple(ToolCall(*calls[i]) for i in sorted(calls)),
            reasoning="".join(c.reasoning for c in self.chunks),
        )
        object.__setattr__(self, "whole", whole)  # frozen: made once, never changed after
        return whole


def of_completion(
    completion: Completion, provider: str, cost_nanos: int | None, now: float
) -> Entry:
    """A unary answer as an entry: one chunk with all of it."""
    chunk = Chunk(
        delta=completion.text,
        finish_reason=completion.finish_reason,
        usage=completion.usage,
        upstream_model=completion.upstream_model,
        tool_calls=tuple(
            ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(completion.tool_calls)
        ),
        reasoning=completion.reasoning,
    )
    return Entry((chunk,), provider, completion.upstream_model, cost_nanos, now, completion)


def of_stream(
    chunks: Sequence[Chunk],
    usage: Usage,
    provider: str,
    upstream_model: str,
    cost_nanos: int | None,
    now: float,
) -> Entry:
    """A stream's chunks as an entry; `usage` is what its end reported (kept on the last
    chunk, where a replay hands it on)."""
    kept = list(chunks)
    if kept and kept[-1].usage is None:
        kept[-1] = dataclasses.replace(kept[-1], usage=usage)
    return Entry(tuple(kept), provider, upstream_model, cost_nanos, now)


def encode(entry: Entry) -> bytes:
    chunks = [
        [
            c.delta,
            c.reasoning,
            None if c.finish_reason is None else c.finish_reason.value,
            None if c.usage is None else _usage(c.usage),
            c.upstream_model,
            [[t.index, t.id, t.name, t.arguments] for t in c.tool_calls],
        ]
        for c in entry.chunks
    ]
    body = {
        "f": FORMAT,
        "p": entry.provider,
        "m": entry.upstream_model,
        "c": entry.cost_nanos,
        "t": entry.stored_at,
        "k": chunks,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def decode(data: bytes) -> Entry:
    try:
        body = json.loads(data)
        if not isinstance(body, dict) or body.get("f") != FORMAT:
            raise EntryError("not an entry of this format")
        chunks = tuple(
            Chunk(
                delta=str(delta),
                finish_reason=None if finish is None else FinishReason(finish),
                usage=None if usage is None else Usage(*(int(n) for n in usage)),
                upstream_model=str(model),
                tool_calls=tuple(
                    ToolCallDelta(int(i), str(id_), str(name), str(args))
                    for i, id_, name, args in calls
                ),
                reasoning=str(reasoning),
            )
            for delta, reasoning, finish, usage, model, calls in body["k"]
        )
        cost = body["c"]
        return Entry(
            chunks,
            str(body["p"]),
            str(body["m"]),
            None if cost is None else int(cost),
            float(body["t"]),
        )
    except EntryError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise EntryError(f"damaged entry: {type(exc).__name__}") from None


def _usage(usage: Usage) -> list[Any]:
    return [
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_prompt_tokens,
        usage.reasoning_tokens,
    ]
