"""The cache key of a request: a SHA-256 over everything that shapes its answer and the scope
of the caller who asks.

What shapes an answer is what deduplication compares (CompletionRequest.shape_key): the logical
model, every message with its parts (an inline image by the SHA-256 of its bytes), tool calls
and tool results, the tools and tool choice, the response format, the sampling settings, stop
sequences, seed, the end-user id and vendor options. Not the request id, not the metadata tags.
They are written out as canonical JSON (sorted keys, no spaces), so equal requests give equal
keys in every process and every version that keeps FORMAT.

The scope is who may share an entry: one key (`key:<id>`), the keys of one owner
(`team:<owner>`), or everyone (`global`), as the model's cache config says; a key without an
owner keeps a team-scoped entry to itself. With auth off there are no tenants: every caller is
`anonymous`, one scope. Plain Python.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from hapaxd.admission.keys import Caller
from hapaxd.core.types import CompletionRequest, Image, Json, Message, Part, Role

FORMAT = 1  # bumped when the encoding changes, so old entries are never read as new ones


def _canonical_encoder() -> Callable[[Any], str]:
    """Canonical JSON: sorted keys (the shape holds lists, with any JSON object already
    canonical text), no spaces, not ASCII-escaped: what json.dumps(value, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False) writes. The C encoder is made once (json.dumps
    makes one per call) and without the circular-reference check a shape of lists of plain
    values never needs."""
    if c_make_encoder is None:  # no C accelerator: the pure-Python encoder, same text
        return json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
    default = json.JSONEncoder().default  # what is not JSON: TypeError, as json.dumps says
    made = c_make_encoder(None, default, encode_basestring, None, ":", ",", True, False, True)
    return lambda value: "".join(made(value, 0))


_CANONICAL = _canonical_encoder()


def scope_of(caller: Caller | None, scope: str) -> str:
    """The scope an entry of `caller` is kept in, by the model's `scope` setting."""
    if scope == "global":
        return "global"
    if caller is None:
        return "anonymous"
    if scope == "team" and caller.team:
        return f"team:{caller.team}"
    return f"key:{caller.id}"


def cache_key(request: CompletionRequest, scope: str) -> str:
    """The hex SHA-256 naming the entry of `request` in `scope`."""
    return hashlib.sha256(_CANONICAL([FORMAT, scope, shape(request)]).encode()).hexdigest()


def shape(request: CompletionRequest) -> list[Any]:
    """What shapes the answer, as JSON values (CompletionRequest.shape_key, field by field)."""
    choice = request.tool_choice
    fmt = request.response_format
    return [
        request.model,
        [_message(m) for m in request.messages],
        request.max_tokens,
        request.temperature,
        request.top_p,
        list(request.stop),
        request.user,
        [[t.name, t.description, _json(t.parameters), t.strict] for t in request.tools],
        None if choice is None else [choice.mode.value, choice.function],
        request.parallel_tool_calls,
        None
        if fmt is None
        else [fmt.type.value, fmt.name, fmt.description, _json(fmt.schema), fmt.strict],
        request.seed,
        request.presence_penalty,
        request.frequency_penalty,
        [[wire, value.text] for wire, value in request.vendor_options],
    ]


def settings_shape(request: CompletionRequest, embedded: str) -> str:
    """Everything that shapes the answer but the text that was embedded, as one string: what a
    semantic hit must match exactly (model, tools, format, sampling, ...; and with `embedded`
    "last_user", every turn before the last user turn, word for word)."""
    rest = shape(request)
    messages = request.messages
    if embedded == "last_user":
        last = max((i for i, m in enumerate(messages) if m.role is Role.USER), default=-1)
        rest[1] = [_message(m) for i, m in enumerate(messages) if i != last]
    else:
        rest[1] = [m.role.value for m in messages]
    return _CANONICAL(rest)


def _message(message: Message) -> list[Any]:
    return [
        message.role.value,
        message.content,
        [_part(p) for p in message.parts],
        [[c.id, c.name, c.arguments] for c in message.tool_calls],
        message.tool_call_id,
    ]


def _part(part: Part) -> Any:
    if isinstance(part, Image):
        digest = hashlib.sha256(part.data).hexdigest() if part.data else ""
        return [part.url, digest, part.mime_type]
    return part


def _json(value: Json | None) -> str | None:
    return None if value is None else value.text
