"""An embeddings request over several upstream calls, for a vendor that takes fewer texts a call
than the gateway accepts (Gemini's batchEmbedContents 100, Vertex AI's :predict 250 and 1 for
gemini-embedding models, Bedrock's Cohere 96 and Titan 1): the inputs go in consecutive batches
of at most `size`, all sent at once (the HTTP client's pool bounds how many are in flight), and
the vectors come back in input order with the batches' token counts added up. When one call
fails the others are cancelled, and its error is the request's: the router sees one failure
and decides as for any other.

Pure Python: no HTTP client, no grpc.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from hapaxd.core.types import EmbeddingRequest, Embeddings, Usage

EmbedBatch = Callable[[EmbeddingRequest], Awaitable[Embeddings]]


async def embed_in_batches(request: EmbeddingRequest, size: int, embed: EmbedBatch) -> Embeddings:
    """`embed` for each batch of at most `size` of the request's inputs; one Embeddings."""
    inputs = request.inputs
    if len(inputs) <= size:
        return await embed(request)
    batches = [
        dataclasses.replace(request, inputs=inputs[i : i + size])
        for i in range(0, len(inputs), size)
    ]
    calls = [asyncio.ensure_future(embed(batch)) for batch in batches]
    try:
        answers = await asyncio.gather(*calls)
    except BaseException:
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        raise
    return Embeddings(
        vectors=tuple(vector for answer in answers for vector in answer.vectors),
        usage=Usage(prompt_tokens=sum(answer.usage.prompt_tokens for answer in answers)),
        upstream_model=answers[0].upstream_model,
    )
