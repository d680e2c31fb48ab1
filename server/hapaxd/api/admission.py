"""The door: the cap on calls in flight (load shedding), which calls need an API key, and the
check every such call passes before any other work (decoding errors, validation,
deduplication, routing).

    health (grpc.health.v1)      always open: meshes and load balancers probe it
    CompletionService            any valid key (a bearer / x-api-key, or a mutual-TLS client
                                 certificate mapped to a key); the key's policy (models,
                                 metadata keys, limits) is then
                                 applied to the request by the servicer (Caller.authorize)
    AdminService                 auth.admin_service: open | any_key | admin (default admin)
    reflection                   auth.reflection: open | any_key | admin (default open)
    any other service            any valid key

hapax.v1 calls are checked by the observability interceptor, first thing after it opens the
call's record (so a refused call is still counted and logged); `AdmissionInterceptor` checks the
other services. The key is read from the metadata once, when the call begins. Transport layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from hapax.v1 import admin_service_pb2
from hapaxd.admission.keys import Caller, KeyRing
from hapaxd.api import metadata
from hapaxd.api.call import CallRecord, abort, record_of
from hapaxd.api.wrapping import Wrap, WrappingInterceptor
from hapaxd.config import Access, AuthSettings
from hapaxd.core.errors import (
    AdminKeyRequired,
    ApiKeyInvalid,
    ApiKeyMissing,
    GatewayError,
    Overloaded,
)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE = reflection.SERVICE_NAME
ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


def service_of(path: str) -> str:
    """`/hapax.v1.CompletionService/Complete` -> `hapax.v1.CompletionService`."""
    return path.strip("/").partition("/")[0]


SHED_RETRY_AFTER = 1.0  # the wait a shed caller is told (RetryInfo, retry-after)


class Door:
    """Who may come in: the keys and who needs one (None: auth is off, every method is open), and
    the cap on hapax.v1 calls in flight (None: no cap). `keys` may be swapped whole (a reload);
    a call uses the ring it was checked against."""

    def __init__(
        self, auth: AuthSettings, keys: KeyRing | None, max_in_flight: int | None = None
    ) -> None:
        self.in_flight = 0
        self.reconfigure(auth, keys, max_in_flight)

    def reconfigure(
        self, auth: AuthSettings, keys: KeyRing | None, max_in_flight: int | None
    ) -> None:
        """New keys, access and cap (a reload), for calls from now on."""
        self._services: dict[str, Access] = {
            HEALTH_SERVICE: "open",
            ADMIN_SERVICE: auth.admin_service,
            REFLECTION_SERVICE: auth.reflection,
        }
        self.keys, self.max_in_flight = keys, max_in_flight

    def access(self, path: str) -> Access:
        """What a call to this method needs: "open", "any_key" or "admin"."""
        if self.keys is None:
            return "open"
        return self._services.get(service_of(path), "any_key")

    def check(self, context: grpc.aio.ServicerContext, access: Access, path: str) -> Caller:
        """The caller's verified key; raises Unauthenticated or PermissionDenied. Reads the
        metadata, so it runs before the call's first await."""
        return self.verify(
            context.invocation_metadata(), access, path, lambda: self._certificate(context)
        )

    def verify(
        self,
        headers: Any,
        access: Access,
        path: str,
        certificate: Callable[[], Caller | None] | None = None,
    ) -> Caller:
        """The key presented in `headers` ((name, value) pairs, names lower-case), or else the
        one a client certificate stands for; raises Unauthenticated or PermissionDenied. The
        gRPC door and the OpenAI-compatible HTTP door both ask here."""
        presented, why = metadata.credential(headers)
        if not presented:
            caller = certificate() if certificate is not None else None
            if caller is None:
                raise ApiKeyMissing(why)
        else:
            caller = self.keys.verify(presented) if self.keys is not None else None
        if caller is None:
            raise ApiKeyInvalid()
        if access == "admin" and not caller.admin:
            raise AdminKeyRequired(service_of(path), caller.id)
        return caller

    def enter(self, record: CallRecord) -> None:
        """Count the call among those in flight, or shed it (Overloaded) when the gateway is
        full. A call that entered must `leave` when it ends."""
        if self.max_in_flight is not None:
            if self.in_flight >= self.max_in_flight:
                raise Overloaded(self.max_in_flight, SHED_RETRY_AFTER)
            self.in_flight += 1
            record.inside = True

    def _certificate(self, context: grpc.aio.ServicerContext) -> Caller | None:
        """The key a mutual-TLS client certificate stands for (auth.keys[].client_cert_*)."""
        if self.keys is None or not self.keys.knows_certificates:
            return None
        peer = context.auth_context()
        subject = b"".join(peer.get("x509_subject", ())).decode("utf-8", "replace")
        sans = [v.decode("utf-8", "replace") for v in peer.get("x509_subject_alternative_name", ())]
        return self.keys.by_certificate(subject, sans)

    async def admit(
        self,
        context: grpc.aio.ServicerContext,
        record: CallRecord,
        access: Access,
        path: str,
        *,
        counted: bool = False,
    ) -> None:
        """Shed the call when the gateway is full (`counted` calls only: hapax.v1), then note the
        caller's key in the record; or end the call with its status (AbortError). A counted
        call must `leave` when it ends, admitted or not."""
        try:
            if counted:
                self.enter(record)
            if access != "open":
                record.admitted(self.check(context, access, path))
        except GatewayError as refused:
            await abort(context, refused, record)

    def leave(self, record: CallRecord) -> None:
        if record.inside:
            record.inside = False
            self.in_flight -= 1


Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


class AdmissionInterceptor(WrappingInterceptor):
    """The door for services other than hapax.v1 (the observability interceptor checks those)
    and health (always open): reflection, as auth.reflection says when each call begins, and
    any service added later."""

    def __init__(self, door: Door, prefix: str) -> None:
        super().__init__()
        self._door = door
        self._prefix = prefix  # methods under it are checked by the observability interceptor

    def wrapper(self, path: str, handler: grpc.RpcMethodHandler) -> tuple[Wrap, bool] | None:
        if path.startswith(self._prefix) or service_of(path) == HEALTH_SERVICE:
            return None
        return (lambda h: self._wrap(h, path)), True

    def _wrap(self, handler: grpc.RpcMethodHandler, path: str) -> Any:
        """Each call asks the door what it needs then (a reload may change it)."""
        kinds = {
            (False, False): (grpc.unary_unary_rpc_method_handler, handler.unary_unary),
            (False, True): (grpc.unary_stream_rpc_method_handler, handler.unary_stream),
            (True, False): (grpc.stream_unary_rpc_method_handler, handler.stream_unary),
            (True, True): (grpc.stream_stream_rpc_method_handler, handler.stream_stream),
        }
        factory, behavior = kinds[(handler.request_streaming, handler.response_streaming)]
        door = self._door
        checked: Behavior
        if inspect.isasyncgenfunction(behavior):

            async def checked_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                access = door.access(path)
                if access != "open":
                    await door.admit(context, record_of(context), access, path)
                async for response in behavior(request, context):
                    yield response

            checked = checked_stream
        else:

            async def checked_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                access = door.access(path)
                if access != "open":
                    await door.admit(context, record_of(context), access, path)
                result = behavior(request, context)
                return (await result) if inspect.isawaitable(result) else result

            checked = checked_call
        return factory(
            checked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
