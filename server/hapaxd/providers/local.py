"""The built-in provider: no network, a deterministic answer made from the request, so the gateway
serves out of the box and in smoke tests. Its answers say plainly that they are local."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from hapaxd.core.provider import ProviderSpec
from hapaxd.core.types import Chunk, Completion, CompletionRequest, FinishReason, Role, Usage

PREFIX = "[hapax local provider: no upstream model was called]"


def answer_words(request: CompletionRequest) -> tuple[list[str], FinishReason]:
    """The answer as words (each with its leading space) and why it ends."""
    last_user = next((m.content for m in reversed(request.messages) if m.role is Role.USER), "")
    text = f"{PREFIX} You said: {last_user}"
    for stop in request.stop:
        cut = text.find(stop) if stop else -1
        if cut >= 0:
            text = text[:cut]
    words = text.split(" ")
    pieces = [words[0]] + [" " + w for w in words[1:]]
    if request.max_tokens is not None and len(pieces) > request.max_tokens:
        return pieces[: request.max_tokens], FinishReason.LENGTH
    return pieces, FinishReason.STOP


def prompt_tokens(request: CompletionRequest) -> int:
    return sum(len(m.content.split()) for m in request.messages)


class LocalProvider:
    def __init__(self, spec: ProviderSpec) -> None:
        self._spec = spec
        # Seconds between streamed words, to mimic a slow model; config has checked and
        # normalised it (options.chunk_delay: 300ms arrives as "0.3").
        self._delay = float(spec.options.get("chunk_delay", "0"))

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def type(self) -> str:
        return "local"

    async def complete(self, request: CompletionRequest) -> Completion:
        words, finish = answer_words(request)
        return Completion(
            text="".join(words),
            finish_reason=finish,
            usage=Usage(prompt_tokens(request), len(words)),
            upstream_model=request.model,
        )

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        words, finish = answer_words(request)
        for word in words:
            if self._delay:
                await asyncio.sleep(self._delay)
            yield Chunk(delta=word, upstream_model=request.model)
        yield Chunk(
            finish_reason=finish,
            usage=Usage(prompt_tokens(request), len(words)),
            upstream_model=request.model,
        )

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
