"""The ModelService servicer: each logical model with its providers in preference order and what
they can do, read from the route table of the generation the call entered (the call pipeline
filters it to the models the caller's key may use). Transport only."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import grpc

from hapax.v1 import model_service_pb2 as pb
from hapax.v1 import model_service_pb2_grpc as pb_grpc
from hapaxd.api.call import abort, record_of
from hapaxd.api.decoding import checked
from hapaxd.calls.errors import CallFailed
from hapaxd.calls.pipeline import Calls
from hapaxd.core.types import Capability


def capabilities(able: Iterable[Capability]) -> pb.Capabilities:
    return pb.Capabilities(**{c.value: True for c in able})


class ModelServicer(pb_grpc.ModelServiceServicer):
    def __init__(self, calls: Calls, types: Callable[[], dict[str, str]]) -> None:
        self._calls = calls
        self._types = types  # provider name -> type, of the current providers

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        record = record_of(context)
        try:
            listing = await self._calls.models(record, partial(checked, request))
        except CallFailed as failed:
            await abort(context, failed.view, record)
        routes = listing.routes
        types = self._types()
        models = []
        for name in listing.names:
            listed: list[pb.ModelRoute] = []
            able: set[Capability] = set()
            for rank, entries in enumerate(routes.ranks(name), start=1):
                for provider, upstream in entries:
                    own = routes.capabilities(provider, name)
                    able |= own
                    listed.append(
                        pb.ModelRoute(
                            provider=provider,
                            provider_type=types.get(provider, ""),
                            upstream_model=upstream,
                            rank=rank,
                            capabilities=capabilities(own),
                        )
                    )
            models.append(pb.Model(name=name, routes=listed, capabilities=capabilities(able)))
        return pb.ListModelsResponse(
            models=models,
            default_model=routes.default_model,
            default_embedding_model=routes.default_embedding_model,
        )
