"""What every door does with a validated domain request before the router sees it, whichever
transport it came by (the gRPC servicers, the OpenAI-compatible HTTP door): resolve its model
(only to providers able to do what it needs), check it against the caller's key, and take it
through the key's rate limits. Uses no grpc API itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from hapaxd.admission.limits import NO_LIMITS, Limiter, Ticket
from hapaxd.api.call import CallRecord
from hapaxd.core.routes import RouteTable
from hapaxd.core.types import AnyRequest, Capability

R = TypeVar("R", bound=AnyRequest)


def routed(request: R, record: CallRecord, routes: RouteTable, needs: Iterable[Capability]) -> R:
    """`request` for the logical model it resolves to; ModelNotFound, CapabilityMissing, or
    PermissionDenied for a model or metadata the caller's key may not use."""
    model = routes.resolve(request.model, needs)
    record.model = model
    if model != request.model:
        request = request.with_model(model)  # type: ignore[assignment]
    if record.key is not None:
        record.key.authorize(request)
    return request


async def admitted(
    limiter: Limiter, record: CallRecord, request: AnyRequest, stream: bool
) -> Ticket:
    """The key's rate limits (RateLimited when over one); a ticket to settle at the end."""
    if record.key is None:
        return NO_LIMITS
    return await limiter.admit(record.key, request, stream)
