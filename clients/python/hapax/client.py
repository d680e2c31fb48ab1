"""Client and AsyncClient: the gateway's services behind plain methods. Each call carries the API
key (as `authorization: Bearer`) and a deadline; UNAVAILABLE is retried by gRPC's own retry
policy (the channel's service config), which waits what the gateway's RetryInfo says (the
gateway sends it as `grpc-retry-pushback-ms` too); every failure is a HapaxError."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, TypedDict, Unpack

import grpc
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hapax.errors import HapaxError
from hapax.v1 import completion_service_pb2 as pb
from hapax.v1 import completion_service_pb2_grpc as pb_grpc
from hapax.v1 import embedding_service_pb2 as embed_pb
from hapax.v1 import embedding_service_pb2_grpc as embed_grpc
from hapax.v1 import model_service_pb2 as model_pb
from hapax.v1 import model_service_pb2_grpc as model_grpc
from hapax.v1 import usage_service_pb2 as usage_pb
from hapax.v1 import usage_service_pb2_grpc as usage_grpc

SERVICES = (
    "hapax.v1.CompletionService",
    "hapax.v1.EmbeddingService",
    "hapax.v1.ModelService",
    "hapax.v1.UsageService",
)
ROLES = {
    "system": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
}
Messages = Sequence[pb.Message | Mapping[str, Any]]


def retry_service_config(attempts: int = 3) -> str:
    """gRPC service config retrying UNAVAILABLE on the hapax.v1 services, `attempts` in all."""
    policy = {
        "maxAttempts": max(2, attempts),
        "initialBackoff": "0.2s",
        "maxBackoff": "5s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    names = [{"service": s} for s in SERVICES]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


def _options(retries: int) -> list[tuple[str, Any]]:
    if retries <= 1:
        return [("grpc.enable_retries", 0)]
    return [("grpc.enable_retries", 1), ("grpc.service_config", retry_service_config(retries))]


def _struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(dict(value), struct_pb2.Struct())


def _message(m: pb.Message | Mapping[str, Any]) -> pb.Message:
    if isinstance(m, pb.Message):
        return m
    calls = [
        pb.ToolCall(id=c["id"], name=c["name"], arguments=c.get("arguments", ""))
        for c in m.get("tool_calls", ())
    ]
    return pb.Message(
        role=ROLES[m.get("role", "user")],
        content=m.get("content", ""),
        tool_calls=calls,
        tool_call_id=m.get("tool_call_id", ""),
    )


def _tool(tool: pb.Tool | Mapping[str, Any]) -> pb.Tool:
    if isinstance(tool, pb.Tool):
        return tool
    declaration = pb.FunctionDeclaration(name=tool["name"], description=tool.get("description", ""))
    if tool.get("parameters") is not None:
        declaration.parameters.CopyFrom(_struct(tool["parameters"]))
    return pb.Tool(function=declaration)


class CompleteOptions(TypedDict, total=False):
    """What Complete and StreamComplete take beside the prompt (each optional).

    messages: the conversation, as pb.Message or {"role", "content", "tool_calls",
    "tool_call_id"} dicts (instead of the prompt); model: a logical model, empty for the
    default; tools: pb.Tool or {"name", "description", "parameters"} dicts; tool_choice: "auto",
    "none", "required" or a function name; json_schema: {"name", "schema", "strict"} for a
    JSON-schema answer; metadata: attribution for the gateway's log; timeout: this call's
    deadline in seconds, instead of the client's.
    """

    messages: Messages
    model: str
    max_tokens: int
    temperature: float
    tools: Sequence[pb.Tool | Mapping[str, Any]]
    tool_choice: str
    json_schema: Mapping[str, Any]
    metadata: Mapping[str, str]
    timeout: float | None


TOOL_MODES = {
    "auto": pb.TOOL_CHOICE_MODE_AUTO,
    "none": pb.TOOL_CHOICE_MODE_NONE,
    "required": pb.TOOL_CHOICE_MODE_REQUIRED,
}


def _fields(prompt: str | None, options: CompleteOptions) -> dict[str, Any]:
    """The request fields Complete and StreamComplete share."""
    fields: dict[str, Any] = {"model": options.get("model", "")}
    if options.get("messages"):
        fields["messages"] = [_message(m) for m in options["messages"]]
    elif prompt is not None:
        fields["prompt"] = prompt
    for name in ("max_tokens", "temperature"):
        if options.get(name) is not None:
            fields[name] = options[name]
    if options.get("tools"):
        fields["tools"] = [_tool(t) for t in options["tools"]]
    choice = options.get("tool_choice")
    if choice is not None:
        fields["tool_choice"] = (
            pb.ToolChoice(mode=TOOL_MODES[choice])
            if choice in TOOL_MODES
            else pb.ToolChoice(function=choice)
        )
    schema = options.get("json_schema")
    if schema is not None:
        fields["response_format"] = pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=pb.JsonSchema(
                name=schema.get("name", "answer"),
                schema=_struct(schema["schema"]),
                strict=bool(schema.get("strict", False)),
            ),
        )
    if options.get("metadata"):
        fields["metadata"] = dict(options["metadata"])
    return fields


def _embed_request(
    inputs: Sequence[str], model: str, dimensions: int | None
) -> embed_pb.EmbedRequest:
    request = embed_pb.EmbedRequest(model=model, inputs=list(inputs))
    if dimensions is not None:
        request.dimensions = dimensions
    return request


class UsageOptions(TypedDict, total=False):
    """What `usage` takes besides the range: filters, and the fields to group by ("day",
    "key", "team", "model", "provider")."""

    start_day: str
    end_day: str
    key_id: str
    team: str
    model: str
    provider: str
    group_by: Sequence[str]


USAGE_GROUPS = {
    "day": usage_pb.USAGE_GROUP_DAY,
    "key": usage_pb.USAGE_GROUP_KEY,
    "team": usage_pb.USAGE_GROUP_TEAM,
    "model": usage_pb.USAGE_GROUP_MODEL,
    "provider": usage_pb.USAGE_GROUP_PROVIDER,
}


def _usage_request(options: UsageOptions) -> usage_pb.GetUsageRequest:
    fields: dict[str, Any] = {k: v for k, v in options.items() if k != "group_by"}
    try:
        groups = [USAGE_GROUPS[g] for g in options.get("group_by", ())]
    except KeyError as unknown:
        raise ValueError(f"group_by: {unknown} is not one of {', '.join(USAGE_GROUPS)}") from None
    return usage_pb.GetUsageRequest(**fields, group_by=groups)


def _status_name(reply: health_pb2.HealthCheckResponse) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


class _Base:
    """The key, the default deadline and the stubs, whichever kind of channel."""

    def __init__(self, channel: Any, api_key: str | None, timeout: float | None) -> None:
        self.channel = channel
        self.timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self._complete = pb_grpc.CompletionServiceStub(channel)
        self._embed = embed_grpc.EmbeddingServiceStub(channel)
        self._models = model_grpc.ModelServiceStub(channel)
        self._usage = usage_grpc.UsageServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    def _call(self, timeout: float | None) -> dict[str, Any]:
        """What every call carries: the key, and its deadline."""
        return {"metadata": self._metadata, "timeout": self.timeout if timeout is None else timeout}

    def _complete_call(
        self, prompt: str | None, options: CompleteOptions
    ) -> tuple[pb.CompleteRequest, dict[str, Any]]:
        return pb.CompleteRequest(**_fields(prompt, options)), self._call(options.get("timeout"))

    def _stream_call(
        self, prompt: str | None, options: CompleteOptions
    ) -> tuple[pb.StreamCompleteRequest, dict[str, Any]]:
        request = pb.StreamCompleteRequest(**_fields(prompt, options))
        return request, self._call(options.get("timeout"))


class Client(_Base):
    """A blocking client. `target` is host:port; `api_key` one of the gateway's keys; `timeout`
    each call's deadline in seconds (None: none); `retries` attempts in all for UNAVAILABLE;
    `credentials` for TLS (grpc.ssl_channel_credentials(...)), else plaintext."""

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        api_key: str | None = None,
        timeout: float | None = 60.0,
        retries: int = 3,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        options = _options(retries)
        channel = (
            grpc.secure_channel(target, credentials, options)
            if credentials is not None
            else grpc.insecure_channel(target, options)
        )
        super().__init__(channel, api_key, timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def complete(
        self, prompt: str | None = None, **options: Unpack[CompleteOptions]
    ) -> pb.CompleteResponse:
        """One whole completion (CompleteOptions says what else it takes)."""
        request, call = self._complete_call(prompt, options)
        try:
            return self._complete.Complete(request, **call)  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None

    def stream(
        self, prompt: str | None = None, **options: Unpack[CompleteOptions]
    ) -> Iterator[pb.StreamCompleteResponse]:
        """The stream's messages as they arrive: text in `delta`, tool-call pieces in
        `tool_calls`, reasoning in `reasoning_delta`; the last carries finish reason, usage and
        route."""
        request, call = self._stream_call(prompt, options)
        try:
            yield from self._complete.StreamComplete(request, **call)
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None

    def embed(
        self,
        inputs: Sequence[str],
        *,
        model: str = "",
        dimensions: int | None = None,
        timeout: float | None = None,
    ) -> embed_pb.EmbedResponse:
        """One vector per input (`response.embeddings[i].values`)."""
        request = _embed_request(inputs, model, dimensions)
        try:
            return self._embed.Embed(request, **self._call(timeout))  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None

    def models(self, *, timeout: float | None = None) -> model_pb.ListModelsResponse:
        """The logical models this key may use, with their routes and capabilities."""
        try:
            return self._models.ListModels(  # type: ignore[no-any-return]
                model_pb.ListModelsRequest(), **self._call(timeout)
            )
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None

    def usage(
        self, *, timeout: float | None = None, **options: Unpack[UsageOptions]
    ) -> usage_pb.GetUsageResponse:
        """Calls, tokens, cost and energy from the gateway's usage ledger (UsageOptions)."""
        request = _usage_request(options)
        try:
            return self._usage.GetUsage(request, **self._call(timeout))  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gRPC health status name: SERVING or NOT_SERVING."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            return _status_name(self._health.Check(request, **self._call(timeout)))
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None


class AsyncClient(_Base):
    """The asyncio client: Client's methods as coroutines, `stream` an async iterator."""

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        api_key: str | None = None,
        timeout: float | None = 60.0,
        retries: int = 3,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        options = _options(retries)
        channel = (
            grpc.aio.secure_channel(target, credentials, options)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options)
        )
        super().__init__(channel, api_key, timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def complete(
        self, prompt: str | None = None, **options: Unpack[CompleteOptions]
    ) -> pb.CompleteResponse:
        request, call = self._complete_call(prompt, options)
        try:
            return await self._complete.Complete(request, **call)  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None

    async def stream(
        self, prompt: str | None = None, **options: Unpack[CompleteOptions]
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        request, call = self._stream_call(prompt, options)
        try:
            async for message in self._complete.StreamComplete(request, **call):
                yield message
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None

    async def embed(
        self,
        inputs: Sequence[str],
        *,
        model: str = "",
        dimensions: int | None = None,
        timeout: float | None = None,
    ) -> embed_pb.EmbedResponse:
        request = _embed_request(inputs, model, dimensions)
        try:
            return await self._embed.Embed(request, **self._call(timeout))  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None

    async def models(self, *, timeout: float | None = None) -> model_pb.ListModelsResponse:
        try:
            return await self._models.ListModels(  # type: ignore[no-any-return]
                model_pb.ListModelsRequest(), **self._call(timeout)
            )
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None

    async def usage(
        self, *, timeout: float | None = None, **options: Unpack[UsageOptions]
    ) -> usage_pb.GetUsageResponse:
        request = _usage_request(options)
        try:
            return await self._usage.GetUsage(request, **self._call(timeout))  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            return _status_name(await self._health.Check(request, **self._call(timeout)))
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None
