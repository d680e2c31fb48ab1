"""Request validation: raw request fields in, a CompletionRequest or InvalidRequest (naming every
bad field) out. Plain Python: the servicer maps protobuf to these arguments first."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from hapaxd.core.errors import FieldViolation, InvalidRequest
from hapaxd.core.types import CompletionRequest, Message, Role

MAX_NAME = 256
MAX_STOPS = 16
MAX_METADATA = 64


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    max_content_chars: int = 1_000_000
    max_messages: int = 1024


def build_request(
    *,
    model: str,
    messages: Sequence[tuple[Role | None, str]],
    prompt: str,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    stop: Sequence[str],
    user: str,
    metadata: Mapping[str, str],
    request_id: str = "",
    limits: Limits = Limits(),
) -> CompletionRequest:
    bad: list[FieldViolation] = []

    def reject(field: str, why: str) -> None:
        bad.append(FieldViolation(field, why))

    if len(model) > MAX_NAME:
        reject("model", f"longer than {MAX_NAME} characters")
    if not messages and not prompt:
        reject("messages", "give messages, or a prompt")
    if len(messages) > limits.max_messages:
        reject("messages", f"{len(messages)} messages; the limit is {limits.max_messages}")
    total = len(prompt) if not messages else 0
    for i, (role, content) in enumerate(messages):
        if role is None:
            reject(f"messages[{i}].role", "must be ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT")
        if not content:
            reject(f"messages[{i}].content", "must not be empty")
        total += len(content)
    if total > limits.max_content_chars:
        field = "messages" if messages else "prompt"
        reject(field, f"content is {total} characters; the limit is {limits.max_content_chars}")
    if max_tokens is not None and max_tokens < 1:
        reject("max_tokens", "must be at least 1")
    _check_range(reject, "temperature", temperature, 0.0, 2.0)
    _check_range(reject, "top_p", top_p, 0.0, 1.0)
    if len(stop) > MAX_STOPS:
        reject("stop", f"at most {MAX_STOPS} sequences")
    for i, sequence in enumerate(stop):
        if not sequence or len(sequence) > MAX_NAME:
            reject(f"stop[{i}]", f"must be 1 to {MAX_NAME} characters")
    if len(user) > MAX_NAME:
        reject("user", f"longer than {MAX_NAME} characters")
    if len(metadata) > MAX_METADATA:
        reject("metadata", f"at most {MAX_METADATA} entries")
    for key, value in metadata.items():
        if not key or len(key) > MAX_NAME or len(value) > 4 * MAX_NAME:
            reject(f"metadata[{key[:MAX_NAME]!r}]", "keys 1 to 256 characters, values up to 1024")
    if bad:
        raise InvalidRequest(bad)
    turns = tuple(Message(role, content) for role, content in messages if role is not None)
    return CompletionRequest(
        model=model,
        messages=turns or (Message(Role.USER, prompt),),
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=tuple(stop),
        user=user,
        metadata=dict(metadata),
        request_id=request_id,
    )


def _check_range(reject: object, field: str, value: float | None, low: float, high: float) -> None:
    if value is None:
        return
    if math.isnan(value) or not low <= value <= high:
        reject(field, f"must be a number from {low:g} to {high:g}")  # type: ignore[operator]
