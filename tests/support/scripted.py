"""An in-process provider that follows a script, for router unit tests. The end-to-end suites
use real HTTP fake upstreams instead."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from hapaxd.core.errors import UpstreamError
from hapaxd.core.failures import FailureClass
from hapaxd.core.types import Chunk, Completion, CompletionRequest, FinishReason, Usage

OK = "ok"


class ScriptedProvider:
    """Each call takes the next step: "ok", a FailureClass, ("retry_after", secs), or "hang"."""

    def __init__(
        self,
        name: str,
        *steps: Any,
        default: Any = OK,
        text: str = "hi",
        break_after: int | None = None,
    ) -> None:
        """`break_after`: a stream fails (TRANSIENT) after that many chunks."""
        self._name = name
        self.break_after = break_after
        self.steps = list(steps)
        self.default = default
        self.text = text
        self.calls: list[CompletionRequest] = []
        self.cancelled = 0
        self.called = asyncio.Event()

    @property
    def name(self) -> str:
        return self._name

    @property
    def type(self) -> str:
        return "scripted"

    async def _step(self, request: CompletionRequest) -> None:
        self.calls.append(request)
        self.called.set()
        step = self.steps.pop(0) if self.steps else self.default
        if step == OK:
            return
        if step == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if isinstance(step, tuple) and step[0] == "retry_after":
            raise UpstreamError(FailureClass.RATE_LIMITED, self._name, "429", retry_after=step[1])
        raise UpstreamError(step, self._name, f"scripted {step.value}")

    async def complete(self, request: CompletionRequest) -> Completion:
        await self._step(request)
        return Completion(self.text, FinishReason.STOP, Usage(1, 1), request.model)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        await self._step(request)
        for sent, word in enumerate(self.text.split()):
            if sent == self.break_after:
                raise UpstreamError(FailureClass.TRANSIENT, self._name, "connection reset")
            yield Chunk(delta=word)
        yield Chunk(finish_reason=FinishReason.STOP, usage=Usage(1, 1))

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
