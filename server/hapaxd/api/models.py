"""The ModelService servicer: each logical model with its providers in preference order and what
they can do, read from the current generation's route table (filtered to the models the
caller's key may use). Transport only."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc

from hapax.v1 import model_service_pb2 as pb
from hapax.v1 import model_service_pb2_grpc as pb_grpc
from hapaxd.api.call import record_of
from hapaxd.core.generation import Generations
from hapaxd.core.types import Capability


def capabilities(able: Iterable[Capability]) -> pb.Capabilities:
    return pb.Capabilities(**{c.value: True for c in able})


class ModelServicer(pb_grpc.ModelServiceServicer):
    def __init__(self, generations: Generations, types: Callable[[], dict[str, str]]) -> None:
        self._generations = generations
        self._types = types  # provider name -> type, of the current providers

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        record = record_of(context)
        generation = self._generations.enter()
        try:
            routes = generation.routes
            types = self._types()
            models = []
            for name in routes.listed_models():
                if record.key is not None and not record.key.may_use(name):
                    continue
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
        finally:
            generation.leave()
