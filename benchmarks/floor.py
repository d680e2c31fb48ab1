"""The floor: a bare grpc.aio server implementing hapax.v1.CompletionService on the same proto,
answering a constant. It sends what the gateway sends against the fake upstream (same text, id
length, usage, route and, for StreamComplete, the same number of messages), and does nothing else:
no validation, no routing, no upstream call. Gateway cost = gateway - floor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from benchmarks import fake_upstream
from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc

REQUEST_ID = "0" * 32  # the gateway's ids are uuid4().hex: 32 characters
LOGICAL_MODEL = "default"
_USAGE = pb.Usage(
    prompt_tokens=fake_upstream.PROMPT_TOKENS,
    completion_tokens=fake_upstream.COMPLETION_TOKENS,
    total_tokens=fake_upstream.PROMPT_TOKENS + fake_upstream.COMPLETION_TOKENS,
)
_ROUTE = pb.Route(provider="fake", upstream_model=fake_upstream.MODEL, attempts=1)

COMPLETE_RESPONSE = pb.CompleteResponse(
    id=REQUEST_ID,
    text=fake_upstream.TEXT,
    finish_reason=pb.FINISH_REASON_STOP,
    usage=_USAGE,
    route=_ROUTE,
    model=LOGICAL_MODEL,
)
STREAM_RESPONSES = (
    *(
        pb.StreamCompleteResponse(id=REQUEST_ID, delta=piece, model=LOGICAL_MODEL)
        for piece in fake_upstream.PIECES
    ),
    pb.StreamCompleteResponse(
        id=REQUEST_ID,
        finish_reason=pb.FINISH_REASON_STOP,
        usage=_USAGE,
        route=_ROUTE,
        model=LOGICAL_MODEL,
    ),
)
assert len(STREAM_RESPONSES) == fake_upstream.STREAM_MESSAGES


class FloorServicer(pb_grpc.CompletionServiceServicer):  # type: ignore[misc]
    async def Complete(
        self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteResponse:
        return COMPLETE_RESPONSE

    async def StreamComplete(
        self, request: pb.StreamCompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        for message in STREAM_RESPONSES:
            yield message


async def start(address: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, int]:
    """A started floor server and its port (same server options as hapaxd.app.App)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_CompletionServiceServicer_to_server(FloorServicer(), server)
    port = server.add_insecure_port(address)
    await server.start()
    return server, port
