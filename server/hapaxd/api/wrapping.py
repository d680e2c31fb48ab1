"""The base of the server interceptors that wrap method handlers: each wrapped handler is built
once per method path, and afresh if grpc ever hands a different handler for the same path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

Wrap = Callable[[grpc.RpcMethodHandler], grpc.RpcMethodHandler]


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrapper(self, path: str, handler: grpc.RpcMethodHandler) -> tuple[Wrap, bool] | None:
        """How to wrap `handler` and whether to remember the result (an open-ended set of paths,
        such as unknown methods, must not grow the cache); None passes it through."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        path = details.method
        cached = self._wrapped.get(path)
        if cached is not None and cached[0] is handler:
            return cached[1]
        chosen = self.wrapper(path, handler)
        if chosen is None:
            return handler
        wrap, keep = chosen
        result = wrap(handler)
        if keep:
            self._wrapped[path] = (handler, result)
        return result


class Combined(WrappingInterceptor):
    """Several wrapping interceptors as one (the first outermost): grpc runs each interceptor's
    intercept_service for every call, so one pass costs less than several."""

    def __init__(self, *parts: WrappingInterceptor) -> None:
        super().__init__()
        self._parts = parts

    def wrapper(self, path: str, handler: grpc.RpcMethodHandler) -> tuple[Wrap, bool] | None:
        chosen = [c for c in (part.wrapper(path, handler) for part in self._parts) if c]
        if not chosen:
            return (lambda h: h), True  # remembered too: the path needs no wrapping
        keep = all(k for _, k in chosen)

        def wrap(inner: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
            for outer, _ in reversed(chosen):
                inner = outer(inner)
            return inner

        return wrap, keep
