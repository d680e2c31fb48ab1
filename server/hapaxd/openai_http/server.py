"""The OpenAI-compatible HTTP door (aiohttp.web, in the gateway's event loop, on a port of its
own): `POST /v1/chat/completions` (JSON, or SSE with `stream: true`), `POST /v1/embeddings` and
`GET /v1/models`. Each route decodes the body (openai_http/wire.py), runs the call pipeline the
gRPC door runs (calls/pipeline.py: the door, the generation, validation, routing, the key's
policy and limits, the deduplicator and router), and encodes the answer; the call is observed
(metrics and access-log line) under the hapax.v1 method it stands for. Errors leave as OpenAI's
error body, straight from the call's ErrorView, with the matching HTTP status and `Retry-After`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

from aiohttp import web

from hapaxd.calls import metadata
from hapaxd.calls.errors import CallFailed, ErrorView
from hapaxd.calls.pipeline import Calls, StreamEnd
from hapaxd.calls.record import CallRecord, open_record
from hapaxd.config import OpenAIHttpSettings
from hapaxd.core.errors import FieldViolation, InvalidRequest
from hapaxd.core.types import Chunk, CompletionRequest, EmbeddingRequest, Route
from hapaxd.core.validation import Limits, build_embedding_request, build_request
from hapaxd.costs import Charge
from hapaxd.observability.call_observer import CallObserver
from hapaxd.openai_http import wire
from hapaxd.tls.certificates import ReloadingContext, client_identity

log = logging.getLogger("hapaxd.openai_http")
# A JSON escape of a UTF-16 surrogate: paired ones make one character, a lone one is no text.
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")

# The hapax.v1 method each route stands for: its metrics and log line.
CHAT = "Complete"
CHAT_STREAM = "StreamComplete"
EMBED = "Embed"
MODELS = "ListModels"


def _peer(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"ipv4:{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""


class Call:
    """One HTTP call's record, from its start to its end, and what its log line shows."""

    __slots__ = ("completion", "record", "request")

    def __init__(self, request: web.Request, method: str) -> None:
        headers = [(k.lower(), v) for k, v in request.headers.items()]
        tls = request.transport.get_extra_info("ssl_object") if request.transport else None
        self.record = open_record(
            method,
            headers,
            peer=_peer(request),
            # Under mutual TLS a client certificate may stand for a key, as on the gRPC port.
            certificate=(lambda: client_identity(tls.getpeercert(True))) if tls else None,
            door="http",
        )
        self.request: Any = None  # the domain request, once built (the access log's prompt)
        self.completion = ""


class OpenAIDoor:
    def __init__(
        self,
        settings: OpenAIHttpSettings,
        *,
        calls: Calls,
        observer: CallObserver,
    ) -> None:
        self._settings = settings
        self._calls = calls
        self._observer = observer
        self._runner: web.AppRunner | None = None
        self.port = 0

    # lifecycle ----------------------------------------------------------------------------

    async def start(self, address: str | None = None, reuse_port: bool = False) -> None:
        """Listen (on `address`, else `openai_http.address`): over HTTPS when `openai_http.tls`
        is set, its certificate re-read on change (TlsError before anything listens when the
        files cannot serve)."""
        tls = self._settings.tls
        context = ReloadingContext(tls, "openai_http.tls").context if tls is not None else None
        app = web.Application(client_max_size=self._settings.max_body_bytes)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embed)
        app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        host, _, port = (address or self._settings.address).rpartition(":")
        site = web.TCPSite(
            runner,
            host.strip("[]") or "0.0.0.0",
            int(port),
            ssl_context=context,
            reuse_port=reuse_port,  # the worker processes of serve --workers share the port
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info(
            "OpenAI-compatible %s on port %d (/v1/chat/completions, /v1/embeddings)",
            "HTTPS" if context is not None else "HTTP",
            self.port,
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # one call -----------------------------------------------------------------------------

    async def _serve(
        self, request: web.Request, name: str, work: Callable[[Call], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        call = Call(request, name)
        record = call.record
        method = self._observer.method(name)
        started = self._observer.begin(method)
        error: BaseException | None = None
        try:
            return await work(call)
        except CallFailed as failed:  # every failure leaves as OpenAI's error body
            error = failed
            return _error(record, failed.view)
        except web.HTTPException:
            raise
        except ConnectionError as exc:  # the caller went away mid-answer: nothing to answer
            error, record.code = exc, "CANCELLED"
            raise
        except Exception as exc:  # a bug of the door's own, outside the pipeline
            error = exc
            return _error(record, record.failed(exc))
        except BaseException as exc:  # the caller went away: nothing to answer
            error = exc
            raise
        finally:
            self._observer.end(method, record, error, started, call.request, call.completion)

    @staticmethod
    async def _body(request: web.Request) -> tuple[Any, InvalidRequest | None]:
        """The JSON body, or the error a call with this body ends with (read before the door:
        the size limit is aiohttp's)."""
        try:
            raw = await request.read() or b"null"
            parsed = json.loads(raw)
            if _SURROGATE.search(raw):  # a \ud800-style escape: is one left unpaired?
                json.dumps(parsed, ensure_ascii=False).encode()  # UnicodeEncodeError if so
            return parsed, None
        except (ValueError, UnicodeError):
            return None, InvalidRequest([FieldViolation("body", "not JSON text (UTF-8)")])

    # the routes ---------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        parsed, problem = await self._body(request)
        streaming = isinstance(parsed, dict) and parsed.get("stream") is True
        include_usage = False

        def parse(request_id: str, limits: Limits) -> CompletionRequest:
            nonlocal include_usage
            if problem is not None:
                raise problem
            arguments, _, include_usage = wire.chat_arguments(parsed)
            return build_request(**arguments, request_id=request_id, limits=limits)

        async def unary(call: Call) -> web.StreamResponse:
            answer = await self._calls.complete(call.record, _noting(call, parse))
            call.completion = answer.completion.text
            return web.json_response(
                wire.completion_body(answer.completion, answer.route, answer.request),
                headers=_route_headers(call.record, answer.route, answer.charge),
            )

        async def stream(call: Call) -> web.StreamResponse:
            return await self._stream(request, call, _noting(call, parse), lambda: include_usage)

        return await self._serve(
            request, CHAT_STREAM if streaming else CHAT, stream if streaming else unary
        )

    async def _stream(
        self,
        request: web.Request,
        call: Call,
        parse: Callable[[str, Limits], CompletionRequest],
        include_usage: Callable[[], bool],
    ) -> web.StreamResponse:
        record = call.record
        response: web.StreamResponse | None = None
        writer: wire.ChunkWriter | None = None
        texts: list[str] = []
        async with aclosing(self._calls.stream(record, parse)) as items:
            try:
                async for item in items:
                    if writer is None:  # nothing is sent before the first chunk has come
                        asked = call.request  # as resolved: the chunks name the logical model
                        if asked.model != record.model:
                            asked = asked.with_model(record.model)
                        writer = wire.ChunkWriter(asked, include_usage())
                        response = await self._open_stream(request, record)
                    if type(item) is Chunk:
                        for piece in writer.pieces(item):
                            await response.write(_event(piece))  # type: ignore[union-attr]
                        texts.append(item.delta)
                    else:
                        end: StreamEnd = item  # type: ignore[assignment]
                        for piece in writer.end(end.finish, end.usage):
                            await response.write(_event(piece))  # type: ignore[union-attr]
                        await response.write(b"data: [DONE]\n\n")  # type: ignore[union-attr]
            except CallFailed as failed:
                if response is None:
                    raise  # before anything was sent: an HTTP error status
                _, body = wire.error_body(failed.view)  # after: an error event ends the stream
                await response.write(_event(body))
            finally:
                call.completion = "".join(texts)
        if response is None:  # a stream with no chunk at all: only its end
            response = await self._open_stream(request, record)
        await response.write_eof()
        return response

    async def _open_stream(self, request: web.Request, record: CallRecord) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                metadata.REQUEST_ID_KEY: record.request_id,
                **dict(metadata.cache_metadata(record.cache, record.cache_age, record.similarity)),
            }
        )
        await response.prepare(request)
        return response

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        parsed, problem = await self._body(request)
        encoding = "float"

        def parse(request_id: str, limits: Limits) -> EmbeddingRequest:
            nonlocal encoding
            if problem is not None:
                raise problem
            arguments, encoding = wire.embed_arguments(parsed)
            return build_embedding_request(**arguments, request_id=request_id, limits=limits)

        async def work(call: Call) -> web.StreamResponse:
            found = await self._calls.embed(call.record, _noting(call, parse))
            return web.json_response(
                wire.embeddings_body(found.embeddings, found.request.model, encoding),
                headers=_route_headers(call.record, found.route, found.charge),
            )

        return await self._serve(request, EMBED, work)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        async def work(call: Call) -> web.StreamResponse:
            listing = await self._calls.models(call.record, lambda: None)
            names = [n for n in listing.names if n != "*"]  # OpenAI's list has no wildcard
            return web.json_response(wire.models_body(names))

        return await self._serve(request, MODELS, work)


def _noting(call: Call, parse: Callable[[str, Limits], Any]) -> Callable[[str, Limits], Any]:
    """`parse`, noting the request it built in the call (for the access log's prompt)."""

    def noted(request_id: str, limits: Limits) -> Any:
        call.request = parse(request_id, limits)
        return call.request

    return noted


def _error(record: CallRecord, view: ErrorView) -> web.Response:
    status, body = wire.error_body(view)
    headers = {metadata.REQUEST_ID_KEY: record.request_id, **wire.retry_after_header(view)}
    if record.cache:
        headers.update(metadata.cache_metadata(record.cache, None, None))
    return web.json_response(body, status=status, headers=headers)


def _event(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def _route_headers(record: CallRecord, route: Route, charge: Charge) -> dict[str, str]:
    """What served the answer and what it cost: `x-hapax-cost` is the amount and its currency
    (`0.000123000 USD`), absent for a model with no price; `x-hapax-energy-joules` the estimate,
    absent when none is known. A streamed answer's headers leave before its cost is known: its
    cost is in the ledger and the metrics. The amount keeps all nine decimals: it is exact."""
    headers = {
        metadata.REQUEST_ID_KEY: record.request_id,
        "x-hapax-provider": route.provider,
        "x-hapax-attempts": str(route.attempts),
    }
    if record.cache:
        headers.update(metadata.cache_metadata(record.cache, record.cache_age, record.similarity))
    if charge.cost_nanos is not None:
        units, nanos = divmod(charge.cost_nanos, 1_000_000_000)
        headers["x-hapax-cost"] = f"{units}.{nanos:09d} {charge.currency}"
    if charge.energy_joules is not None:
        headers["x-hapax-energy-joules"] = f"{charge.energy_joules:.6g}"
    return headers
