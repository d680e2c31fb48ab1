"""The OpenAI-compatible HTTP door (aiohttp.web, in the gateway's event loop, on a port of its
own): `POST /v1/chat/completions` (JSON, or SSE with `stream: true`), `POST /v1/embeddings` and
`GET /v1/models`. Each call goes the way a gRPC call does: its record opened from the headers
once, the door (shedding, the API key from `Authorization: Bearer` or `x-api-key`), validation,
routing to able providers, the key's policy and limits, the deduplicator and router of the
current generation; then its metrics and access-log line under the gRPC method it stands for.
Errors leave in OpenAI's error body with the matching HTTP status and `Retry-After`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.rpc import error_details_pb2

from hapaxd.admission.limits import NO_LIMITS, Limiter, Ticket
from hapaxd.api import metadata
from hapaxd.api.admission import Door
from hapaxd.api.call import CallRecord, failed
from hapaxd.api.serving import admitted, routed
from hapaxd.config import OpenAIHttpSettings
from hapaxd.core.errors import FieldViolation, InvalidRequest
from hapaxd.core.generation import Generation, Generations
from hapaxd.core.router import STREAMING
from hapaxd.core.types import FinishReason, Route, Usage
from hapaxd.core.validation import Limits, build_embedding_request, build_request
from hapaxd.observability.rpc_observer import ObservabilityInterceptor
from hapaxd.openai_http import wire

log = logging.getLogger("hapaxd.openai_http")

# The gRPC method each path stands for: its access mode, metrics and log line.
CHAT = "/hapax.v1.CompletionService/Complete"
CHAT_STREAM = "/hapax.v1.CompletionService/StreamComplete"
EMBED = "/hapax.v1.EmbeddingService/Embed"
MODELS = "/hapax.v1.ModelService/ListModels"


def _method(path: str) -> str:
    return path.rsplit("/", 1)[-1]


class Call:
    """One HTTP call's record, generation and ticket, from its start to its end."""

    def __init__(self, request: web.Request, path: str) -> None:
        headers = [(k.lower(), v) for k, v in request.headers.items()]
        self.headers = headers
        self.path = path
        request_id, caller = metadata.read(headers)
        self.record = CallRecord(
            _method(path), request_id=request_id, caller=caller, peer=_peer(request)
        )
        self.ticket: Ticket = NO_LIMITS
        self.used: int | None = None
        self.delivered = 0  # characters sent to the caller: what an unfinished stream is charged
        self.domain: Any = None
        self.completion = ""


def _peer(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"ipv4:{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""


class OpenAIDoor:
    def __init__(
        self,
        settings: OpenAIHttpSettings,
        *,
        door: Door,
        generations: Generations,
        limiter: Limiter,
        limits: Limits,
        calls: ObservabilityInterceptor,
    ) -> None:
        self._settings = settings
        self._door = door
        self._generations = generations
        self._limiter = limiter
        self._limits = limits
        self._calls = calls
        self._runner: web.AppRunner | None = None
        self.port = 0

    # lifecycle ----------------------------------------------------------------------------

    async def start(self, address: str | None = None) -> None:
        app = web.Application(client_max_size=self._settings.max_body_bytes)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embed)
        app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        host, _, port = (address or self._settings.address).rpartition(":")
        site = web.TCPSite(runner, host.strip("[]") or "0.0.0.0", int(port))
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info(
            "OpenAI-compatible HTTP on port %d (/v1/chat/completions, /v1/embeddings)", self.port
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # one call -----------------------------------------------------------------------------

    async def _serve(
        self,
        request: web.Request,
        path: str,
        work: Callable[[Call, Generation], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        call = Call(request, path)
        record = call.record
        started = self._calls.begin(record.method)
        error: BaseException | None = None
        generation = self._generations.enter()
        try:
            self._door.enter(record)
            access = self._door.access(path)
            if access != "open":
                record.admitted(self._door.verify(call.headers, access, path))
            return await work(call, generation)
        except web.HTTPException:
            raise
        except Exception as exc:  # every failure leaves as OpenAI's error body
            error = exc
            return self._error(record, exc)
        except BaseException as exc:  # the caller went away: nothing to answer
            error = exc
            raise
        finally:
            call.ticket.settle(call.used, call.delivered)
            generation.leave()
            self._door.leave(record)
            self._calls.end(record.method, record, error, started, call.domain, call.completion)

    def _error(self, record: CallRecord, error: BaseException) -> web.Response:
        rich = failed(error, record)
        reason, param, retry = "INTERNAL", None, None
        for packed in rich.details:
            if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                reason = info.reason
            elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                packed.Unpack(bad)
                param = bad.field_violations[0].field if bad.field_violations else None
            elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                hint = error_details_pb2.RetryInfo()
                packed.Unpack(hint)
                retry = hint.retry_delay.seconds + hint.retry_delay.nanos / 1e9
        status, body = wire.error_body(record.code, rich.message, reason, param)
        headers = {metadata.REQUEST_ID_KEY: record.request_id, **wire.retry_after_header(retry)}
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    async def _body(request: web.Request) -> tuple[Any, InvalidRequest | None]:
        """The JSON body, or the error a call with this body ends with (read before the door:
        the size limit is aiohttp's)."""
        try:
            return json.loads(await request.read() or b"null"), None
        except (ValueError, UnicodeDecodeError):
            return None, InvalidRequest([FieldViolation("body", "not JSON")])

    # the routes ---------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        parsed, problem = await self._body(request)
        streaming = isinstance(parsed, dict) and parsed.get("stream") is True

        async def work(call: Call, generation: Generation) -> web.StreamResponse:
            if problem is not None:
                raise problem
            arguments, stream, include_usage = wire.chat_arguments(parsed)
            domain = build_request(
                **arguments, request_id=call.record.request_id, limits=self._limits
            )
            needs = domain.needs() | STREAMING if stream else domain.needs()
            domain = call.domain = routed(domain, call.record, generation.routes, needs)
            call.ticket = await admitted(self._limiter, call.record, domain, stream)
            if stream:
                return await self._stream(request, call, generation, include_usage)
            completion, route = await generation.dedup.complete(
                domain, call.record.deadline, call.record.caller
            )
            call.used = completion.usage.total_tokens
            call.record.answered(route, completion.usage)
            call.completion = completion.text
            return web.json_response(
                wire.completion_body(completion, route, domain), headers=_route_headers(call, route)
            )

        return await self._serve(request, CHAT_STREAM if streaming else CHAT, work)

    async def _stream(
        self, request: web.Request, call: Call, generation: Generation, include_usage: bool
    ) -> web.StreamResponse:
        domain = call.domain
        writer = wire.ChunkWriter(domain, include_usage)
        response: web.StreamResponse | None = None
        finish, usage, route = FinishReason.UNSPECIFIED, Usage(), None
        texts: list[str] = []
        async with generation.dedup.stream(
            domain, call.record.deadline, call.record.caller
        ) as items:
            try:
                async for item in items:
                    if isinstance(item, Route):
                        route = item
                        continue
                    if response is None:  # nothing is sent before the first chunk has come
                        response = await self._open_stream(request, call)
                    call.delivered += item.size()
                    for piece in writer.pieces(item):
                        await response.write(_event(piece))
                    texts.append(item.delta)
                    if item.finish_reason is not None:
                        finish = item.finish_reason
                    if item.usage is not None:
                        usage = item.usage
            except Exception as error:
                if response is None:
                    raise  # before anything was sent: an HTTP error status
                rich = failed(error, call.record)  # after: an error event ends the stream
                _, body = wire.error_body(
                    call.record.code, rich.message, call.record.error_reason, None
                )
                await response.write(_event(body))
                await response.write_eof()
                return response
        if response is None:
            response = await self._open_stream(request, call)
        for piece in writer.end(finish, usage):
            await response.write(_event(piece))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        if route is not None:
            call.used = usage.total_tokens
            call.record.answered(route, usage)
        call.completion = "".join(texts)
        return response

    async def _open_stream(self, request: web.Request, call: Call) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                metadata.REQUEST_ID_KEY: call.record.request_id,
            }
        )
        await response.prepare(request)
        return response

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        parsed, problem = await self._body(request)

        async def work(call: Call, generation: Generation) -> web.StreamResponse:
            if problem is not None:
                raise problem
            arguments, encoding = wire.embed_arguments(parsed)
            domain = build_embedding_request(
                **arguments, request_id=call.record.request_id, limits=self._limits
            )
            domain = call.domain = routed(domain, call.record, generation.routes, domain.needs())
            call.ticket = await admitted(self._limiter, call.record, domain, stream=False)
            vectors, route = await generation.dedup.embed(
                domain, call.record.deadline, call.record.caller
            )
            call.used = vectors.usage.total_tokens
            call.record.answered(route, vectors.usage)
            return web.json_response(
                wire.embeddings_body(vectors, domain.model, encoding),
                headers=_route_headers(call, route),
            )

        return await self._serve(request, EMBED, work)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        async def work(call: Call, generation: Generation) -> web.StreamResponse:
            key = call.record.key
            names = [
                n
                for n in generation.routes.listed_models()
                if n != "*" and (key is None or key.may_use(n))
            ]
            return web.json_response(wire.models_body(names))

        return await self._serve(request, MODELS, work)


def _event(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def _route_headers(call: Call, route: Route) -> dict[str, str]:
    return {
        metadata.REQUEST_ID_KEY: call.record.request_id,
        "x-hapax-provider": route.provider,
        "x-hapax-attempts": str(route.attempts),
    }
