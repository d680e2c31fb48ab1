"""The AdminService servicer: each provider's type, health, breaker state, last error, latency and
load, for operators with grpcurl. Transport only: it reads Upstream objects."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc

from hapax.v1 import admin_service_pb2 as pb
from hapax.v1 import admin_service_pb2_grpc as pb_grpc
from hapaxd.core.breaker import State
from hapaxd.core.upstream import Upstream

BREAKER = {
    State.CLOSED: pb.BREAKER_STATE_CLOSED,
    State.HALF_OPEN: pb.BREAKER_STATE_HALF_OPEN,
    State.OPEN: pb.BREAKER_STATE_OPEN,
}


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(self, upstreams: Callable[[], Sequence[Upstream]]) -> None:
        self._upstreams = upstreams  # the current ones (a reload swaps them)

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProvidersResponse:
        return pb.ListProvidersResponse(
            providers=[
                pb.ProviderStatus(
                    name=u.name,
                    type=u.provider.type,
                    healthy=u.healthy,
                    breaker_state=BREAKER[u.breaker.state],
                    last_error=u.last_error,
                    latency_p50_ms=u.latency_p50() * 1000,
                    in_flight=u.in_flight,
                    base_url=u.base_url,
                )
                for u in self._upstreams()
            ]
        )
