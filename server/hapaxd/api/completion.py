"""The CompletionService servicer: protobuf in, the call pipeline (calls/pipeline.py), protobuf
out; a failed call ends with the google.rpc.Status of its ErrorView (api/call.py `abort`).
Transport layer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapaxd.api.call import abort, record_of
from hapaxd.api.decoding import Undecodable
from hapaxd.calls.errors import CallFailed
from hapaxd.calls.metadata import REQUEST_ID_KEY, cache_metadata
from hapaxd.calls.pipeline import Calls, StreamEnd
from hapaxd.calls.record import CallRecord
from hapaxd.core.errors import FieldViolation, InvalidRequest
from hapaxd.core.types import (
    Chunk,
    Completion,
    CompletionRequest,
    FinishReason,
    FormatType,
    Image,
    Json,
    Part,
    ResponseFormat,
    Role,
    Route,
    Tool,
    ToolCall,
    ToolChoice,
    ToolMode,
    Usage,
)
from hapaxd.core.validation import Limits, RawMessage, build_request
from hapaxd.costs import Charge

log = logging.getLogger("hapaxd.api.completion")

ROLES = {
    pb.ROLE_SYSTEM: Role.SYSTEM,
    pb.ROLE_USER: Role.USER,
    pb.ROLE_ASSISTANT: Role.ASSISTANT,
    pb.ROLE_TOOL: Role.TOOL,
}
TOOL_MODES = {
    pb.TOOL_CHOICE_MODE_AUTO: ToolMode.AUTO,
    pb.TOOL_CHOICE_MODE_NONE: ToolMode.NONE,
    pb.TOOL_CHOICE_MODE_REQUIRED: ToolMode.REQUIRED,
}
FORMATS = {
    pb.RESPONSE_FORMAT_TYPE_UNSPECIFIED: FormatType.TEXT,
    pb.RESPONSE_FORMAT_TYPE_TEXT: FormatType.TEXT,
    pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT: FormatType.JSON_OBJECT,
    pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: FormatType.JSON_SCHEMA,
}
FINISH = {
    FinishReason.UNSPECIFIED: pb.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.CONTENT_FILTER: pb.FINISH_REASON_CONTENT_FILTER,
    FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
}


Request = pb.CompleteRequest | pb.StreamCompleteRequest


def to_domain(request: Request, request_id: str, limits: Limits) -> CompletionRequest:
    """The validated domain request (a request whose bytes could not be decoded raises its
    MalformedRequest here, after the door)."""
    if isinstance(request, Undecodable):
        raise request.error
    messages = [
        _message(m)
        if m.parts or m.tool_calls or m.tool_call_id
        else RawMessage(ROLES.get(m.role), m.content)
        for m in request.messages
    ]
    extra = (
        _extra_fields(request)
        if request.tools
        or request.vendor_options
        or request.HasField("tool_choice")
        or request.HasField("response_format")
        or request.HasField("seed")
        or request.HasField("presence_penalty")
        or request.HasField("frequency_penalty")
        or request.HasField("parallel_tool_calls")
        else {}  # the plain text call: nothing more to read
    )
    return build_request(
        model=request.model,
        messages=messages,
        prompt=request.prompt,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        temperature=request.temperature if request.HasField("temperature") else None,
        top_p=request.top_p if request.HasField("top_p") else None,
        stop=list(request.stop),
        user=request.user,
        metadata=dict(request.metadata),
        request_id=request_id,
        limits=limits,
        **extra,
    )


def _message(m: pb.Message) -> RawMessage:
    """A turn with parts, tool calls or a tool call id (plain turns are made inline)."""
    return RawMessage(
        ROLES.get(m.role),
        m.content,
        parts=[_part(p) for p in m.parts],
        tool_calls=[ToolCall(c.id, c.name, c.arguments) for c in m.tool_calls],
        tool_call_id=m.tool_call_id,
    )


def _part(part: pb.Part) -> Part:
    if part.WhichOneof("kind") == "image":
        image = part.image
        return Image(url=image.url, data=image.data, mime_type=image.mime_type)
    return part.text


def _json(struct: struct_pb2.Struct, field: str) -> Json:
    """A Struct as JSON; NaN and Infinity (a Struct may hold them, JSON may not) are refused."""
    try:
        return Json(_plain(json_format.MessageToDict(struct)))
    except ValueError:
        raise InvalidRequest([FieldViolation(field, "NaN or Infinity is not JSON")]) from None


def _plain(value: Any) -> Any:
    """A Struct's numbers are all doubles: whole ones go back to integers (`"minItems": 1`).
    Its map has no order: keys are sorted, so the same schema reads the same every time."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _extra_fields(request: Request) -> dict[str, Any]:
    """Tools, tool choice, response format, vendor options and the settings beyond the plain
    text call's, as domain values."""
    tools = [
        Tool(
            name=t.function.name,
            description=t.function.description,
            parameters=(
                _json(t.function.parameters, f"tools[{i}].function.parameters")
                if t.function.HasField("parameters")
                else None
            ),
            strict=t.function.strict,
        )
        for i, t in enumerate(request.tools)
    ]
    fields: dict[str, Any] = {
        "tools": tools,
        "seed": request.seed if request.HasField("seed") else None,
        "presence_penalty": (
            request.presence_penalty if request.HasField("presence_penalty") else None
        ),
        "frequency_penalty": (
            request.frequency_penalty if request.HasField("frequency_penalty") else None
        ),
        "parallel_tool_calls": (
            request.parallel_tool_calls if request.HasField("parallel_tool_calls") else None
        ),
    }
    if request.HasField("tool_choice"):
        choice = request.tool_choice
        if choice.WhichOneof("choice") == "function":
            fields["tool_choice"] = ToolChoice(ToolMode.FUNCTION, choice.function)
        elif choice.mode in TOOL_MODES:
            fields["tool_choice"] = ToolChoice(TOOL_MODES[choice.mode])
    if request.HasField("response_format"):
        given = request.response_format
        schema = given.json_schema
        fields["response_format"] = ResponseFormat(
            type=FORMATS.get(given.type, FormatType.TEXT),
            name=schema.name,
            description=schema.description,
            schema=(
                _json(schema.schema, "response_format.json_schema.schema")
                if schema.HasField("schema")
                else None
            ),
            strict=schema.strict,
        )
    if request.vendor_options:
        fields["vendor_options"] = {
            k: _json(v, f"vendor_options[{k}]") for k, v in request.vendor_options.items()
        }
    return fields


def usage_message(usage: Usage, charge: Charge | None = None) -> pb.Usage:
    """The token counts, and (when known) the call's cost and energy."""
    message = pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )
    if charge is not None:
        if charge.cost_nanos is not None:
            message.cost.currency = charge.currency
            message.cost.nanos = charge.cost_nanos
        if charge.energy_joules is not None:
            message.energy_joules = charge.energy_joules
    return message


def route_message(route: Route) -> pb.Route:
    return pb.Route(
        provider=route.provider,
        upstream_model=route.upstream_model,
        attempts=route.attempts,
        shared=route.shared,
        cached=route.cached,
    )


def to_response(
    completion: Completion, route: Route, request: CompletionRequest, charge: Charge | None = None
) -> pb.CompleteResponse:
    response = pb.CompleteResponse(
        id=request.request_id,
        text=completion.text,
        finish_reason=FINISH[completion.finish_reason],
        usage=usage_message(completion.usage, charge),
        route=route_message(route),
        model=request.model,
    )
    if completion.tool_calls:
        response.tool_calls.extend(
            pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in completion.tool_calls
        )
    if completion.reasoning:
        response.reasoning = completion.reasoning
    return response


def to_stream_end(end: StreamEnd, request_id: str, model: str) -> pb.StreamCompleteResponse:
    """A stream's last message: how it finished, its usage and what served it."""
    return pb.StreamCompleteResponse(
        id=request_id,
        finish_reason=FINISH[end.finish],
        usage=usage_message(end.usage, end.charge),
        route=route_message(end.route),
        model=model,
    )


def to_stream_response(chunk: Chunk, request_id: str, model: str) -> pb.StreamCompleteResponse:
    """A chunk's text, reasoning and tool-call pieces as one stream message."""
    message = pb.StreamCompleteResponse(id=request_id, delta=chunk.delta, model=model)
    if chunk.reasoning:
        message.reasoning_delta = chunk.reasoning
    if chunk.tool_calls:
        message.tool_calls.extend(
            pb.ToolCallDelta(index=d.index, id=d.id, name=d.name, arguments=d.arguments)
            for d in chunk.tool_calls
        )
    return message


def _cache_trailers(record: CallRecord) -> list[tuple[str, str]]:
    return cache_metadata(record.cache, record.cache_age, record.similarity)


class CompletionServicer(pb_grpc.CompletionServiceServicer):
    """Decode, the call pipeline (calls/pipeline.py: the door, the generation, validation,
    routing, the key's policy and limits, the deduplicator and router), encode; a failed call
    ends with the status its ErrorView says."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls

    async def Complete(
        self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteResponse:
        record = record_of(context)
        try:
            answer = await self._calls.complete(record, partial(to_domain, request))
        except CallFailed as failed:
            await abort(context, failed.view, record)
        # x-request-id goes in the trailers, which leave with the answer in grpc's one final
        # batch: sending headers of our own would cost a batch (and an event-loop wake-up) of its
        # own, and a call whose headers were sent is committed, which gRPC's retry policy could
        # no longer retry. A failed call carries it in its trailers too (api/call.py abort).
        context.set_trailing_metadata(
            ((REQUEST_ID_KEY, record.request_id), *_cache_trailers(record))
            if record.cache
            else ((REQUEST_ID_KEY, record.request_id),)
        )
        return to_response(answer.completion, answer.route, answer.request, answer.charge)

    async def StreamComplete(
        self, request: pb.StreamCompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        record = record_of(context)
        request_id = record.request_id
        # In the trailers, as Complete's; every message carries the id too. grpc sends its
        # (empty) headers with the first message, so nothing is committed before a chunk has
        # come from a provider.
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        model = ""
        items = self._calls.stream(record, partial(to_domain, request))
        try:
            async for item in items:
                if not model:
                    model = record.model  # resolved by now
                if type(item) is Chunk:
                    if item.delta and not (item.reasoning or item.tool_calls):
                        yield pb.StreamCompleteResponse(
                            id=request_id, delta=item.delta, model=model
                        )
                    elif item.reasoning or item.tool_calls:
                        yield to_stream_response(item, request_id, model)
                else:
                    if record.cache:  # set before the last message: the call has not ended
                        context.set_trailing_metadata(
                            ((REQUEST_ID_KEY, request_id), *_cache_trailers(record))
                        )
                    yield to_stream_end(item, request_id, model)  # type: ignore[arg-type]
        except CallFailed as failed:
            await abort(context, failed.view, record)
        finally:
            await items.aclose()
