"""The EmbeddingService servicer: protobuf in, a domain EmbeddingRequest to the deduplicator and
router (the same routing, failover, breakers, retries, keys and limits as completions),
protobuf out; every error leaves as a google.rpc.Status. Transport layer."""

from __future__ import annotations

import grpc

from hapax.v1 import embedding_service_pb2 as pb
from hapax.v1 import embedding_service_pb2_grpc as pb_grpc
from hapaxd.admission.limits import NO_LIMITS, Limiter
from hapaxd.api.call import abort, record_of
from hapaxd.api.completion import route_message, usage_message
from hapaxd.api.metadata import REQUEST_ID_KEY
from hapaxd.api.serving import admitted, routed
from hapaxd.core.errors import UpstreamError
from hapaxd.core.failures import FailureClass
from hapaxd.core.generation import Generations
from hapaxd.core.types import EmbeddingRequest, Embeddings, Route
from hapaxd.core.validation import Limits, build_embedding_request


def to_domain(request: pb.EmbedRequest, request_id: str, limits: Limits) -> EmbeddingRequest:
    return build_embedding_request(
        model=request.model,
        inputs=list(request.inputs),
        dimensions=request.dimensions if request.HasField("dimensions") else None,
        user=request.user,
        metadata=dict(request.metadata),
        request_id=request_id,
        limits=limits,
    )


def to_response(vectors: Embeddings, route: Route, request: EmbeddingRequest) -> pb.EmbedResponse:
    return pb.EmbedResponse(
        id=request.request_id,
        embeddings=[pb.Embedding(index=i, values=v) for i, v in enumerate(vectors.vectors)],
        usage=usage_message(vectors.usage),
        route=route_message(route),
        model=request.model,
    )


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    """Embed: the call's record, its generation, the request validated and resolved (only to
    providers declared able to embed), the key's policy and limits, then the deduplicator."""

    def __init__(self, generations: Generations, limits: Limits, limiter: Limiter) -> None:
        self._generations = generations
        self._limits = limits
        self._limiter = limiter

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        record = record_of(context)
        ticket, used = NO_LIMITS, None
        generation = self._generations.enter()
        try:
            domain = to_domain(request, record.request_id, self._limits)
            domain = routed(domain, record, generation.routes, domain.needs())
            ticket = await admitted(self._limiter, record, domain, stream=False)
            vectors, route = await generation.dedup.embed(domain, record.deadline, record.caller)
            if len(vectors.vectors) != len(domain.inputs):  # not an answer to this request
                raise UpstreamError(
                    FailureClass.TRANSIENT,
                    route.provider,
                    f"{len(vectors.vectors)} vectors for {len(domain.inputs)} inputs",
                )
            used = vectors.usage.total_tokens
            record.answered(route, vectors.usage)
            # With the answer, as Complete: an UNAVAILABLE call stays retryable.
            await context.send_initial_metadata(((REQUEST_ID_KEY, record.request_id),))
            return to_response(vectors, route, domain)
        except Exception as error:  # every failure leaves as a status; AbortError is not one
            failure = error
        finally:
            ticket.settle(used)
            generation.leave()
        await abort(context, failure, record)
        raise AssertionError("unreachable: abort raises")
