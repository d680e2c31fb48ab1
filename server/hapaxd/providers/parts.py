"""Pieces several vendor mappings share: the sampling settings under each vendor's names, images
as base64 or data URLs, tool-call arguments between the contract's JSON text and the JSON
objects Anthropic and Ollama carry, and an answer's first alternative (OpenAI's choice, Gemini's
candidate). Pure Python."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from hapaxd.core.types import CompletionRequest, Image

# Our sampling settings (CompletionRequest fields) -> the names a vendor's wire gives them; a
# setting the vendor lacks is left out of its table, and so never sent.
SamplingNames = Mapping[str, str]


def sampling(request: CompletionRequest, names: SamplingNames) -> dict[str, Any]:
    """The sampling settings `request` sets (stop sequences as a list), under the vendor's
    names; those it leaves unset are left out."""
    found: dict[str, Any] = {}
    for ours, theirs in names.items():
        value = getattr(request, ours)
        if ours == "stop":
            if value:
                found[theirs] = list(value)
        elif value is not None:
            found[theirs] = value
    return found


def image_base64(image: Image) -> str:
    return base64.b64encode(image.data).decode("ascii")


def data_url(image: Image) -> str:
    """An inline image as a `data:` URL; a URL image as itself."""
    return image.url or f"data:{image.mime_type};base64,{image_base64(image)}"


def arguments_object(text: str) -> dict[str, Any]:
    """Tool-call arguments (validated as a JSON object, or empty) as the object itself."""
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def arguments_text(value: Any) -> str:
    """Arguments a vendor sent as an object (or already as text) as the contract's JSON text."""
    if isinstance(value, str):
        return value
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


def first_of(body: dict[str, Any], field: str) -> dict[str, Any] | None:
    """The answer's first alternative: the entry of the list `body[field]` (OpenAI's
    `choices`, Gemini's `candidates`) whose `index` is 0 (absent counts as 0), or None."""
    entries = body.get(field)
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if isinstance(entry, dict) and entry.get("index", 0) == 0:
            return entry
    return None
