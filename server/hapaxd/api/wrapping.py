"""The base of the server interceptors that wrap method handlers: each wrapped handler is built
once per method path, and afresh if grpc ever hands a different handler for the same path; and
`Registering`, which applies such wrappers when the handlers are registered instead of per call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

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
        return self.wrapped(details.method, await continuation(details))

    def wrapped(self, path: str, handler: grpc.RpcMethodHandler | None) -> Any:
        """`handler` as this interceptor wraps it (None, a method not found, stays None)."""
        if handler is None:
            return handler
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


class Registering:
    """A grpc.aio.Server as the generated `add_*Servicer_to_server` functions (and health and
    reflection) see it, which wraps each method handler once, at registration, by `wrapping`.
    grpc then runs no interceptor for the call (with none configured it looks the handler up
    directly): the same wrappers as the interceptor, without its per-call coroutine.

    Every method is served through one generic handler that finds a registered method's
    wrapped handler by its path in a dict, and asks the other generic handlers (in the order
    they came) only for a path it does not know. The server itself gets no registered methods:
    grpc.aio keeps a pending request per registered method and waits on all of them together
    for every call (asyncio.wait over one task per method), a cost that grows with the
    contract: about 85 Python calls a call for the gateway's ten methods
    (benchmarks/README.md)."""

    def __init__(self, server: grpc.aio.Server, wrapping: WrappingInterceptor) -> None:
        self._wrapping = wrapping
        self._methods: dict[str, grpc.RpcMethodHandler] = {}
        self._generic: list[grpc.GenericRpcHandler] = []
        server.add_generic_rpc_handlers((_Methods(self._methods, self._generic, wrapping),))

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        for name, handler in handlers.items():
            path = f"/{service}/{name}"
            self._methods[path] = self._wrapping.wrapped(path, handler)


class _Methods(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The one handler the server asks: registered methods by path, then the generic ones."""

    def __init__(
        self,
        methods: dict[str, grpc.RpcMethodHandler],
        generic: list[grpc.GenericRpcHandler],
        wrapping: WrappingInterceptor,
    ) -> None:
        self._methods = methods
        self._generic = generic
        self._wrapping = wrapping

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        handler = self._methods.get(details.method)
        if handler is not None:
            return handler
        for inner in self._generic:
            found = inner.service(details)
            if found is not None:
                return self._wrapping.wrapped(details.method, found)
        return None
