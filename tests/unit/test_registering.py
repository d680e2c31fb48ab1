"""api/wrapping.py Registering: every method through one generic handler, none registered with
the server (grpc.aio waits on a pending request per registered method for every call)."""

from __future__ import annotations

from typing import Any

import grpc

from hapaxd.api.wrapping import Registering, Wrap, WrappingInterceptor


class _Server:
    """What Registering may call on a grpc.aio.Server, recorded."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered.append(service)


class _Tagging(WrappingInterceptor):
    """Wraps a handler into ("wrapped", handler), counting how often it wraps."""

    def __init__(self) -> None:
        super().__init__()
        self.wraps = 0

    def wrapper(self, path: str, handler: grpc.RpcMethodHandler) -> tuple[Wrap, bool] | None:
        def wrap(inner: grpc.RpcMethodHandler) -> Any:
            self.wraps += 1
            return ("wrapped", path, inner)

        return wrap, True


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def handler(name: str) -> Any:
    return grpc.unary_unary_rpc_method_handler(lambda request, context: name)


def test_every_method_goes_through_one_generic_handler_wrapped_once() -> None:
    server, tagging = _Server(), _Tagging()
    registering = Registering(server, tagging)  # type: ignore[arg-type]
    complete, check = handler("complete"), handler("check")
    # As generated code registers a service: its generic handler, then its registered methods.
    registering.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "hapax.v1.CompletionService", {"Complete": complete}
            ),
        )
    )
    registering.add_registered_method_handlers("hapax.v1.CompletionService", {"Complete": complete})
    # A service that only has a generic handler (older generated code, hand-written handlers).
    registering.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": check}),)
    )

    assert server.registered == []
    [only] = server.generic
    assert only.service(_Details("/hapax.v1.CompletionService/Complete")) == (
        "wrapped",
        "/hapax.v1.CompletionService/Complete",
        complete,
    )
    found = only.service(_Details("/grpc.health.v1.Health/Check"))
    assert found == ("wrapped", "/grpc.health.v1.Health/Check", check)
    assert only.service(_Details("/grpc.health.v1.Health/Check")) is found  # wrapped once
    assert only.service(_Details("/hapax.v1.CompletionService/Nothing")) is None
    assert only.service(_Details("/no.Such/Method")) is None
    assert tagging.wraps == 2
