"""Client and AsyncClient: the gateway's services behind plain methods. Each call carries the API
key (as `authorization: Bearer`) and a deadline; UNAVAILABLE is retried by gRPC's own retry
policy (the channel's service config), which waits what the gateway's RetryInfo says (the
gateway sends it as `grpc-retry-pushback-ms` too); every failure is a HapaxError."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

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

SERVICES = ("hapax.v1.CompletionService", "hapax.v1.EmbeddingService", "hapax.v1.ModelService")
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


def _fields(
    prompt: str | None,
    messages: Messages | None,
    model: str,
    max_tokens: int | None,
    temperature: float | None,
    tools: Sequence[pb.Tool | Mapping[str, Any]] | None,
    tool_choice: str | None,
    json_schema: Mapping[str, Any] | None,
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The request fields common to Complete and StreamComplete."""
    fields: dict[str, Any] = {"model": model}
    if messages:
        fields["messages"] = [_message(m) for m in messages]
    elif prompt is not None:
        fields["prompt"] = prompt
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    if temperature is not None:
        fields["temperature"] = temperature
    if tools:
        fields["tools"] = [_tool(t) for t in tools]
    if tool_choice is not None:
        modes = {
            "auto": pb.TOOL_CHOICE_MODE_AUTO,
            "none": pb.TOOL_CHOICE_MODE_NONE,
            "required": pb.TOOL_CHOICE_MODE_REQUIRED,
        }
        fields["tool_choice"] = (
            pb.ToolChoice(mode=modes[tool_choice])
            if tool_choice in modes
            else pb.ToolChoice(function=tool_choice)
        )
    if json_schema is not None:
        fields["response_format"] = pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=pb.JsonSchema(
                name=json_schema.get("name", "answer"),
                schema=_struct(json_schema["schema"]),
                strict=bool(json_schema.get("strict", False)),
            ),
        )
    if metadata:
        fields["metadata"] = dict(metadata)
    return fields


class _Base:
    def __init__(self, api_key: str | None, timeout: float | None) -> None:
        self.timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )

    def _call(self, timeout: float | None) -> dict[str, Any]:
        return {"metadata": self._metadata, "timeout": self.timeout if timeout is None else timeout}


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
        super().__init__(api_key, timeout)
        options = _options(retries)
        self.channel = (
            grpc.secure_channel(target, credentials, options)
            if credentials is not None
            else grpc.insecure_channel(target, options)
        )
        self._complete = pb_grpc.CompletionServiceStub(self.channel)
        self._embed = embed_grpc.EmbeddingServiceStub(self.channel)
        self._models = model_grpc.ModelServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def complete(
        self,
        prompt: str | None = None,
        *,
        messages: Messages | None = None,
        model: str = "",
        max_tokens: int | None = None,
        temperature: float | None = None,
        tools: Sequence[pb.Tool | Mapping[str, Any]] | None = None,
        tool_choice: str | None = None,
        json_schema: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> pb.CompleteResponse:
        """One whole completion. `tool_choice`: "auto", "none", "required" or a function name;
        `json_schema`: {"name", "schema", "strict"} for a JSON-schema answer."""
        request = pb.CompleteRequest(
            **_fields(prompt, messages, model, max_tokens, temperature, tools, tool_choice,
                      json_schema, metadata)
        )  # fmt: skip
        try:
            return self._complete.Complete(request, **self._call(timeout))  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None

    def stream(
        self,
        prompt: str | None = None,
        *,
        messages: Messages | None = None,
        model: str = "",
        max_tokens: int | None = None,
        temperature: float | None = None,
        tools: Sequence[pb.Tool | Mapping[str, Any]] | None = None,
        tool_choice: str | None = None,
        json_schema: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Iterator[pb.StreamCompleteResponse]:
        """The stream's messages as they arrive: text in `delta`, tool-call pieces in
        `tool_calls`, reasoning in `reasoning_delta`; the last carries finish reason, usage and
        route."""
        request = pb.StreamCompleteRequest(
            **_fields(prompt, messages, model, max_tokens, temperature, tools, tool_choice,
                      json_schema, metadata)
        )  # fmt: skip
        try:
            yield from self._complete.StreamComplete(request, **self._call(timeout))
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
        request = embed_pb.EmbedRequest(model=model, inputs=list(inputs))
        if dimensions is not None:
            request.dimensions = dimensions
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

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gRPC health status name: SERVING or NOT_SERVING."""
        try:
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), **self._call(timeout)
            )
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


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
        super().__init__(api_key, timeout)
        options = _options(retries)
        self.channel = (
            grpc.aio.secure_channel(target, credentials, options)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options)
        )
        self._complete = pb_grpc.CompletionServiceStub(self.channel)
        self._embed = embed_grpc.EmbeddingServiceStub(self.channel)
        self._models = model_grpc.ModelServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def complete(
        self,
        prompt: str | None = None,
        *,
        messages: Messages | None = None,
        model: str = "",
        max_tokens: int | None = None,
        temperature: float | None = None,
        tools: Sequence[pb.Tool | Mapping[str, Any]] | None = None,
        tool_choice: str | None = None,
        json_schema: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> pb.CompleteResponse:
        request = pb.CompleteRequest(
            **_fields(prompt, messages, model, max_tokens, temperature, tools, tool_choice,
                      json_schema, metadata)
        )  # fmt: skip
        try:
            return await self._complete.Complete(request, **self._call(timeout))  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None

    async def stream(
        self,
        prompt: str | None = None,
        *,
        messages: Messages | None = None,
        model: str = "",
        max_tokens: int | None = None,
        temperature: float | None = None,
        tools: Sequence[pb.Tool | Mapping[str, Any]] | None = None,
        tool_choice: str | None = None,
        json_schema: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        request = pb.StreamCompleteRequest(
            **_fields(prompt, messages, model, max_tokens, temperature, tools, tool_choice,
                      json_schema, metadata)
        )  # fmt: skip
        try:
            async for message in self._complete.StreamComplete(request, **self._call(timeout)):
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
        request = embed_pb.EmbedRequest(model=model, inputs=list(inputs))
        if dimensions is not None:
            request.dimensions = dimensions
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

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service), **self._call(timeout)
            )
        except grpc.RpcError as error:
            raise HapaxError.from_rpc_error(error) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
