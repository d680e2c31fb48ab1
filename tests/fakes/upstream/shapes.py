"""The vendors' own published types, from their SDKs on PyPI, as the judge of wire shapes: the
request bodies the fake upstream receives (so an adapter's wrong mapping fails the test that
made it) and the payloads the fake sends (so the fake cannot drift from the real wire).

- OpenAI and Azure: `openai.types.chat` (request TypedDicts; ChatCompletion, ChatCompletionChunk)
- Anthropic: `anthropic.types` (MessageCreateParams; Message, RawMessageStreamEvent)
- Ollama: `ollama._types` (ChatRequest, ChatResponse; EmbedRequest, EmbedResponse)
- Embeddings: `openai.types` (EmbeddingCreateParams, CreateEmbeddingResponse)
- Gemini: `google.genai.types` (google-genai). The SDK publishes no type for the REST request
  body itself (its calls take a config it converts): the bodies below are the API reference's
  fields, each typed with the SDK's own models (Content, Tool, ToolConfig, GenerationConfig,
  SafetySetting); answers and stream events are GenerateContentResponse, embeddings
  EmbedContentResponse. The SDK's models refuse unknown keys themselves.
- Bedrock: botocore's own service model of bedrock-runtime (the shapes boto3 itself validates
  against): Converse's input and output shapes, ConverseStream's event shapes. InvokeModel's
  body is the model's own: Titan's and Cohere's embed bodies are hand-typed from their model
  parameter pages.
- Vertex AI: Gemini's, but embeddings: `:predict` (hand-typed from the REST reference), its
  answers hand-typed too.

Unknown keys are problems too (a misspelt field would otherwise pass unseen): the SDKs' request
TypedDicts are checked with extra keys forbidden, and pydantic models key by key.
"""

from __future__ import annotations

import collections.abc
import functools
from typing import Any

import anthropic.types as anthropic_types
import ollama._types as ollama_types
import openai.types as openai_types
import openai.types.chat as openai_chat
from anthropic.types import message_create_params as anthropic_params
from google.genai import types as genai_types
from openai.types import embedding_create_params as openai_embedding_params
from openai.types.chat import completion_create_params as openai_params
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model


class ShapeError(AssertionError):
    """A body that does not match the vendor's published types."""


def _force(value: Any) -> Any:
    """pydantic validates `Iterable[...]` fields lazily: walk them so their items are checked."""
    if isinstance(value, dict):
        return {k: _force(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_force(v) for v in value]
    if isinstance(value, collections.abc.Iterator):
        return [_force(v) for v in value]
    return value


@functools.cache
def _strict(params: Any) -> type[BaseModel]:
    return create_model("Body", __config__=ConfigDict(extra="forbid"), body=(params, ...))


def _check_typed_dict(params: Any, body: Any) -> None:
    try:
        checked = _strict(params).model_validate({"body": body})
        _force(checked.body)
    except ValidationError as exc:
        raise ShapeError(_summary(exc)) from None


def _summary(exc: ValidationError) -> str:
    """The few errors that say what is wrong (a union reports every branch it tried)."""
    lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return f"{len(lines)} problems, e.g.: " + "; ".join(lines[:6])


def _check_model(model: type[BaseModel], body: Any) -> None:
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        raise ShapeError(_summary(exc)) from None
    unknown = list(_unknown_keys(body, parsed, ""))
    if unknown:
        raise ShapeError(f"keys {model.__name__} does not know: {', '.join(unknown)}")


def _unknown_keys(given: Any, parsed: Any, at: str) -> collections.abc.Iterator[str]:
    if isinstance(parsed, BaseModel) and isinstance(given, dict):
        fields = {(f.alias or name): name for name, f in type(parsed).model_fields.items()}
        for key, value in given.items():
            if key not in fields:
                yield f"{at}{key}"
            else:
                yield from _unknown_keys(value, getattr(parsed, fields[key]), f"{at}{key}.")
    elif isinstance(parsed, list | tuple) and isinstance(given, list):
        for i, (g, p) in enumerate(zip(given, parsed, strict=False)):
            yield from _unknown_keys(g, p, f"{at}{i}.")


def _judge(check: Any, body: Any) -> None:
    """`check(body)`, its ValidationError as a ShapeError."""
    try:
        check(body)
    except ValidationError as exc:
        raise ShapeError(_summary(exc)) from None


def _typed(params: Any) -> Any:
    return lambda body: _check_typed_dict(params, body)


def _model(model: type[BaseModel]) -> Any:
    return lambda body: _check_model(model, body)


@functools.cache
def _anthropic_event() -> TypeAdapter[Any]:
    return TypeAdapter(anthropic_types.RawMessageStreamEvent)


_OPENAI = {
    "request": _typed(openai_params.CompletionCreateParamsNonStreaming),
    "stream request": _typed(openai_params.CompletionCreateParamsStreaming),
    "answer": openai_chat.ChatCompletion.model_validate,
    "event": openai_chat.ChatCompletionChunk.model_validate,
    "embed request": _typed(openai_embedding_params.EmbeddingCreateParams),
    "embed answer": openai_types.CreateEmbeddingResponse.model_validate,
}
_STRICT = ConfigDict(extra="forbid")
# The REST API's GenerateContentRequest (its model is the path's), as the API reference lists
# its fields, typed with the SDK's models.
GeminiGenerateContentRequest = create_model(
    "GeminiGenerateContentRequest",
    __config__=_STRICT,
    contents=(list[genai_types.Content], ...),
    systemInstruction=(genai_types.Content | None, None),
    tools=(list[genai_types.Tool] | None, None),
    toolConfig=(genai_types.ToolConfig | None, None),
    safetySettings=(list[genai_types.SafetySetting] | None, None),
    generationConfig=(genai_types.GenerationConfig | None, None),
    cachedContent=(str | None, None),
)
# batchEmbedContents: {"requests": [EmbedContentRequest]}, each naming its model.
GeminiEmbedContentRequest = create_model(
    "GeminiEmbedContentRequest",
    __config__=_STRICT,
    model=(str, ...),
    content=(genai_types.Content, ...),
    taskType=(str | None, None),
    title=(str | None, None),
    outputDimensionality=(int | None, None),
)
GeminiBatchEmbedContentsRequest = create_model(
    "GeminiBatchEmbedContentsRequest",
    __config__=_STRICT,
    requests=(list[GeminiEmbedContentRequest], ...),  # type: ignore[valid-type]
)

# Vertex AI's `:predict` for its embedding models (the REST reference's fields; the SDK builds
# the body in code, with no type for it): one instance per text.
VertexEmbedInstance = create_model(
    "VertexEmbedInstance",
    __config__=_STRICT,
    content=(str, ...),
    task_type=(str | None, None),
    title=(str | None, None),
)
VertexEmbedParameters = create_model(
    "VertexEmbedParameters",
    __config__=_STRICT,
    autoTruncate=(bool | None, None),
    outputDimensionality=(int | None, None),
)
VertexPredictRequest = create_model(
    "VertexPredictRequest",
    __config__=_STRICT,
    instances=(list[VertexEmbedInstance], ...),  # type: ignore[valid-type]
    parameters=(VertexEmbedParameters | None, None),
)
# Its answer, as the reference writes it (snake_case statistics, which the SDK's
# ContentEmbedding reads by field name).
VertexEmbeddingStatistics = create_model(
    "VertexEmbeddingStatistics",
    __config__=_STRICT,
    truncated=(bool | None, None),
    token_count=(int | None, None),
)
VertexEmbedding = create_model(
    "VertexEmbedding",
    __config__=_STRICT,
    values=(list[float], ...),
    statistics=(VertexEmbeddingStatistics | None, None),
)
VertexPrediction = create_model(
    "VertexPrediction",
    __config__=_STRICT,
    embeddings=(VertexEmbedding, ...),  # type: ignore[valid-type]
)
VertexPredictResponse = create_model(
    "VertexPredictResponse",
    __config__=_STRICT,
    predictions=(list[VertexPrediction], ...),  # type: ignore[valid-type]
    metadata=(dict[str, Any] | None, None),
)


@functools.cache
def _bedrock_model() -> Any:
    import botocore.session

    return botocore.session.Session().get_service_model("bedrock-runtime")


def _botocore(shape: Any, params: Any) -> None:
    import botocore.exceptions
    import botocore.validate

    try:
        botocore.validate.validate_parameters(params, shape)
    except botocore.exceptions.ParamValidationError as exc:
        raise ShapeError(str(exc)) from None


def _bedrock_request(body: Any) -> None:
    """A Converse body (the model is the path's; modelId stands in for it)."""
    if not isinstance(body, dict) or "modelId" in body:
        raise ShapeError("a Converse body is an object, without modelId (the path's)")
    _botocore(_bedrock_model().operation_model("Converse").input_shape, {**body, "modelId": "m"})


def _bedrock_answer(body: Any) -> None:
    _botocore(_bedrock_model().operation_model("Converse").output_shape, body)


def _bedrock_event(kind: str, body: Any) -> None:
    """One ConverseStream event's payload, by its :event-type (or exception type)."""
    stream = _bedrock_model().operation_model("ConverseStream").output_shape.members["stream"]
    if kind not in stream.members:
        raise ShapeError(f"no ConverseStream event {kind!r}")
    _botocore(stream.members[kind], body)


class _TitanEmbed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputText: str
    dimensions: int | None = None
    normalize: bool | None = None
    embeddingTypes: list[str] | None = None


class _CohereEmbed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str]
    input_type: str
    truncate: str | None = None
    embedding_types: list[str] | None = None
    output_dimension: int | None = None


def _bedrock_embed(body: Any) -> None:
    model = _CohereEmbed if isinstance(body, dict) and "texts" in body else _TitanEmbed
    _check_model(model, body)
    if model is _CohereEmbed and not 1 <= len(body["texts"]) <= 96:
        raise ShapeError("Cohere embed takes 1 to 96 texts")


def check_bedrock_event(kind: str, body: Any) -> None:
    """ShapeError unless `body` is the payload of a ConverseStream event of type `kind`."""
    _bedrock_event(kind, body)


# What judges each kind of body, by vendor (Azure speaks OpenAI's shapes).
JUDGES: dict[str, dict[str, Any]] = {
    "openai": _OPENAI,
    "azure": _OPENAI,
    "anthropic": {
        "request": _typed(anthropic_params.MessageCreateParamsNonStreaming),
        "stream request": _typed(anthropic_params.MessageCreateParamsStreaming),
        "answer": anthropic_types.Message.model_validate,
        "event": lambda body: _anthropic_event().validate_python(body),
    },
    "ollama": {
        "request": _model(ollama_types.ChatRequest),
        "stream request": _model(ollama_types.ChatRequest),
        "answer": ollama_types.ChatResponse.model_validate,
        "event": ollama_types.ChatResponse.model_validate,
        "embed request": _model(ollama_types.EmbedRequest),
        "embed answer": ollama_types.EmbedResponse.model_validate,
    },
    "gemini": {
        "request": _model(GeminiGenerateContentRequest),
        "stream request": _model(GeminiGenerateContentRequest),
        "answer": _model(genai_types.GenerateContentResponse),
        "event": _model(genai_types.GenerateContentResponse),
        "embed request": _model(GeminiBatchEmbedContentsRequest),
        "embed answer": _model(genai_types.EmbedContentResponse),
    },
    "bedrock": {
        "request": _bedrock_request,
        "stream request": _bedrock_request,
        "answer": _bedrock_answer,
        "embed request": _bedrock_embed,
    },
    # Vertex AI speaks the Gemini wire, but for embeddings.
    "vertex": {
        "request": _model(GeminiGenerateContentRequest),
        "stream request": _model(GeminiGenerateContentRequest),
        "answer": _model(genai_types.GenerateContentResponse),
        "event": _model(genai_types.GenerateContentResponse),
        "embed request": _model(VertexPredictRequest),
        "embed answer": _model(VertexPredictResponse),
    },
}


def _check(vendor: str, kind: str, body: Any) -> None:
    judge = JUDGES.get(vendor, {}).get(kind)
    if judge is None:
        raise ValueError(f"no published types for a {kind} of {vendor!r}")
    _judge(judge, body)


def check_request(vendor: str, body: Any, *, stream: bool) -> None:
    """ShapeError unless `body` is a chat request the vendor's SDK types accept."""
    _check(vendor, "stream request" if stream else "request", body)


def check_answer(vendor: str, body: Any) -> None:
    """ShapeError unless `body` is a whole chat answer as the vendor's SDK parses it."""
    _check(vendor, "answer", body)


def check_event(vendor: str, body: Any) -> None:
    """ShapeError unless `body` is one stream event (an SSE data object or an NDJSON record)."""
    _check(vendor, "event", body)


def check_embed_request(vendor: str, body: Any) -> None:
    """ShapeError unless `body` is an embeddings request the vendor's SDK types accept."""
    _check(vendor, "embed request", body)


def check_embed_answer(vendor: str, body: Any) -> None:
    """ShapeError unless `body` is an embeddings answer as the vendor's SDK parses it."""
    _check(vendor, "embed answer", body)
