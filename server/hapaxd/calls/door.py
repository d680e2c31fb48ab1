"""The door every call passes first, whichever transport it came by: the cap on calls in flight
(load shedding), which calls need an API key, and the key checked before any other work.

    health (grpc.health.v1)      always open: meshes and load balancers probe it
    CompletionService,           any valid key (a bearer / x-api-key, or a mutual-TLS client
    EmbeddingService,            certificate mapped to a key); the key's policy (models,
    ModelService                 metadata keys, limits) is then applied by the call pipeline
    AdminService                 auth.admin_service: open | any_key | admin (default admin)
    reflection                   auth.reflection: open | any_key | admin (default open)
    any other service            any valid key

The call pipeline (calls/pipeline.py) asks here for the calls it runs, checking the key against
the ring of the generation the call entered; the gRPC door's admission wrapper asks for the
other services. The credential was read from the transport once, when the call began (its
CallRecord). Plain Python: no grpc, no HTTP server.
"""

from __future__ import annotations

from hapaxd.admission.keys import Caller, KeyRing
from hapaxd.calls import metadata
from hapaxd.calls.record import CallRecord
from hapaxd.config import Access, AuthSettings
from hapaxd.core.errors import AdminKeyRequired, ApiKeyInvalid, ApiKeyMissing, Overloaded

# The services whose access is set apart (tests/unit/test_door.py checks these against the
# generated descriptors: this folder imports no stubs).
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
ADMIN_SERVICE = "hapax.v1.AdminService"
SHED_RETRY_AFTER = 1.0  # the wait a shed caller is told (RetryInfo, retry-after)


def service_of(path: str) -> str:
    """`/hapax.v1.CompletionService/Complete` -> `hapax.v1.CompletionService`."""
    return path.strip("/").partition("/")[0]


def verify(keys: KeyRing | None, record: CallRecord, access: Access, path: str) -> Caller | None:
    """The caller's key for a call that needs one (`access` "any_key" or "admin"): the key it
    presented, or else the one its client certificate stands for; noted in its record. Raises
    Unauthenticated or PermissionDenied. None when auth is off."""
    if keys is None or access == "open":
        return None
    presented, why = metadata.credential(record.headers)
    if presented:
        caller = keys.verify(presented)
    else:
        certificate = record.certificate
        caller = None
        if certificate is not None and keys.knows_certificates:
            caller = keys.by_certificate(*certificate())
        if caller is None:
            raise ApiKeyMissing(why)
    if caller is None:
        raise ApiKeyInvalid()
    if access == "admin" and not caller.admin:
        raise AdminKeyRequired(service_of(path), caller.id)
    record.admitted(caller)
    return caller


class Door:
    """Who needs a key for which service (from `auth:`), and the cap on calls in flight (None:
    no cap). Reconfigured in place by a reload; the keys themselves belong to each generation
    (calls/generation.py), so a call is checked against the ring of the settings it runs on."""

    def __init__(self, auth: AuthSettings, max_in_flight: int | None = None) -> None:
        self.in_flight = 0
        self.reconfigure(auth, max_in_flight)

    def reconfigure(self, auth: AuthSettings, max_in_flight: int | None) -> None:
        """New access and cap (a reload), for calls from now on."""
        self._services: dict[str, Access] = {
            HEALTH_SERVICE: "open",
            ADMIN_SERVICE: auth.admin_service,
            REFLECTION_SERVICE: auth.reflection,
        }
        self.auth_enabled = auth.enabled
        self.max_in_flight = max_in_flight

    def access(self, path: str) -> Access:
        """What a call to this method needs: "open", "any_key" or "admin"."""
        if not self.auth_enabled:
            return "open"
        return self._services.get(service_of(path), "any_key")

    def enter(self, record: CallRecord) -> None:
        """Count the call among those in flight, or shed it (Overloaded) when the gateway is
        full. A call that entered must `leave` when it ends."""
        if self.max_in_flight is not None:
            if self.in_flight >= self.max_in_flight:
                raise Overloaded(self.max_in_flight, SHED_RETRY_AFTER)
            self.in_flight += 1
            record.inside = True

    def leave(self, record: CallRecord) -> None:
        if record.inside:
            record.inside = False
            self.in_flight -= 1
