"""The EmbeddingService servicer: protobuf in, the call pipeline (calls/pipeline.py: the same
door, routing, failover, breakers, retries, keys and limits as completions), protobuf out; every
error leaves as a google.rpc.Status. Transport layer."""

from __future__ import annotations

from functools import partial

import grpc

from hapax.v1 import embedding_service_pb2 as pb
from hapax.v1 import embedding_service_pb2_grpc as pb_grpc
from hapaxd.api.call import abort, record_of
from hapaxd.api.completion import route_message, usage_message
from hapaxd.api.decoding import Undecodable
from hapaxd.calls.errors import CallFailed
from hapaxd.calls.metadata import REQUEST_ID_KEY
from hapaxd.calls.pipeline import Calls
from hapaxd.core.types import EmbeddingRequest, Embeddings, Route
from hapaxd.core.validation import Limits, build_embedding_request
from hapaxd.costs import Charge


def to_domain(request: pb.EmbedRequest, request_id: str, limits: Limits) -> EmbeddingRequest:
    if isinstance(request, Undecodable):
        raise request.error
    return build_embedding_request(
        model=request.model,
        inputs=list(request.inputs),
        dimensions=request.dimensions if request.HasField("dimensions") else None,
        user=request.user,
        metadata=dict(request.metadata),
        request_id=request_id,
        limits=limits,
    )


def to_response(
    vectors: Embeddings, route: Route, request: EmbeddingRequest, charge: Charge | None = None
) -> pb.EmbedResponse:
    return pb.EmbedResponse(
        id=request.request_id,
        embeddings=[pb.Embedding(index=i, values=v) for i, v in enumerate(vectors.vectors)],
        usage=usage_message(vectors.usage, charge),
        route=route_message(route),
        model=request.model,
    )


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    """Embed: decode, the call pipeline (only providers declared able to embed), encode."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        record = record_of(context)
        try:
            found = await self._calls.embed(record, partial(to_domain, request))
        except CallFailed as failed:
            await abort(context, failed.view, record)
        context.set_trailing_metadata(((REQUEST_ID_KEY, record.request_id),))  # as Complete's
        return to_response(found.embeddings, found.route, found.request, found.charge)
