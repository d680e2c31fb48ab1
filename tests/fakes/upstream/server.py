"""FakeUpstream: a real HTTP server on 127.0.0.1 that speaks the OpenAI, Azure OpenAI, Anthropic,
Ollama, Gemini, Vertex AI and Bedrock wire formats (with Google's OAuth2 token endpoint, oauth.py,
and AWS SigV4 checks and event-stream framing, aws.py), plays
scripted behaviours, and records requests, the TCP connections they came on, and client
disconnects."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any, Self

from aiohttp import web

from .aws import AwsAccount
from .behaviours import Behaviour, Fail, Hang, Malformed, Raw, Reply, awkward_pieces
from .oauth import TokenEndpoint
from .shapes import ShapeError, check_embed_request, check_request
from .wire import WIRES, BedrockWire, GeminiWire, OllamaWire, Wire

VERTEX = r"/v1/projects/[^/]+/locations/[^/]+/publishers/google/models"
TOKEN_PATH = "/token"
# route name -> (method, path regex, vendor wire)
ROUTES: dict[str, tuple[str, str, str]] = {
    "openai.chat": ("POST", r"/v1/chat/completions", "openai"),
    "openai.models": ("GET", r"/v1/models", "openai"),
    "openai.embeddings": ("POST", r"/v1/embeddings", "openai"),
    "azure.chat": ("POST", r"/openai/deployments/[^/]+/chat/completions", "azure"),
    "azure.models": ("GET", r"/openai/models", "azure"),
    "azure.embeddings": ("POST", r"/openai/deployments/[^/]+/embeddings", "azure"),
    "anthropic.messages": ("POST", r"/v1/messages", "anthropic"),
    "anthropic.models": ("GET", r"/v1/models", "anthropic"),  # told apart by anthropic-version
    "ollama.chat": ("POST", r"/api/chat", "ollama"),
    "ollama.tags": ("GET", r"/api/tags", "ollama"),
    "ollama.embed": ("POST", r"/api/embed", "ollama"),
    # Gemini names the model in the path; the method after the colon says whether it streams.
    "gemini.generate": (
        "POST",
        r"/v1beta/models/[^/:]+:(?:generateContent|streamGenerateContent)",
        "gemini",
    ),
    "gemini.models": ("GET", r"/v1beta/models", "gemini"),
    "gemini.embed": ("POST", r"/v1beta/models/[^/:]+:batchEmbedContents", "gemini"),
    # Vertex AI: the Gemini wire under a project and location; every route wants a token of the
    # fake's token endpoint (oauth.py, at /token, not a route: not recorded in `requests`).
    "vertex.generate": (
        "POST",
        VERTEX + r"/[^/:]+:(?:generateContent|streamGenerateContent)",
        "vertex",
    ),
    "vertex.models": ("GET", VERTEX + r"/[^/:]+", "vertex"),  # one publisher model
    "vertex.embed": ("POST", VERTEX + r"/[^/:]+:predict", "vertex"),
    # Bedrock: the runtime names the model in the path; ListFoundationModels is the control
    # plane's (served here on the same host). Every route wants a good SigV4 signature (aws.py).
    "bedrock.converse": ("POST", r"/model/[^/]+/(?:converse|converse-stream)", "bedrock"),
    "bedrock.embed": ("POST", r"/model/[^/]+/invoke", "bedrock"),
    "bedrock.models": ("GET", r"/foundation-models", "bedrock"),
}
EMBED_ROUTES = frozenset(r for r in ROUTES if r.endswith(("embeddings", "embed")))
CHAT_ROUTES = frozenset(
    r for r in ROUTES if not r.endswith(("models", "tags")) and r not in EMBED_ROUTES
)


@dataclasses.dataclass
class RecordedRequest:
    route: str  # a ROUTES name, or "unknown"
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # the parsed body, None if it was not JSON
    disconnected: bool = False  # the client went away before the response was finished
    connection: int = 0  # which TCP connection it came on: 1 for the first the fake saw, and so on
    finished: bool = False  # the fake played it to the end (a stream: its body's end was written)
    shape_error: str = ""  # why the vendor's SDK types refuse the body (answered with a 400)
    model: str = ""  # the model asked for: the body's, or (Azure, Gemini) the path's
    streaming: bool = False  # a chat request asking for a streamed answer


class FakeUpstream:
    """Start with `async with FakeUpstream() as fake` (or start()/stop()); point adapters at
    `fake.base_url(vendor)`; script with `fake.script(route, *behaviours)`."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self.counts: collections.Counter[str] = collections.Counter()  # per path
        self.disconnects = 0
        self.disconnected = asyncio.Event()  # set at the first client disconnect
        # Chat bodies the vendor's SDK types refuse; the fixture fails a test that leaves any.
        self.shape_errors: list[str] = []
        # The transport of each TCP connection that carried a request, in order of arrival; held
        # so that none is freed and a later connection's transport mistaken for it.
        self._transports: list[asyncio.BaseTransport] = []
        self._scripts: dict[str | None, collections.deque[Behaviour]] = collections.defaultdict(
            collections.deque
        )
        self._defaults: dict[str | None, Behaviour] = {}
        self._down = False
        self._closing = False
        self._gate = asyncio.Event()  # open unless hold() closed it
        self._gate.set()
        self.paused = 0  # streams waiting at Reply.pause_after
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.oauth = TokenEndpoint("")  # its token_uri is known once the port is
        self.aws = AwsAccount()  # the AWS credentials Bedrock routes accept

    # lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.2, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self._runner, self._closing = runner, False
        if not self.port:
            self.port = int(runner.addresses[0][1])
        self.oauth.token_uri = f"{self.url}{TOKEN_PATH}"

    async def stop(self) -> None:
        """Close the listener and every open connection (hanging handlers are cancelled)."""
        if self._runner is not None:
            self._closing = True
            await self._runner.cleanup()
            self._runner = None

    async def refuse_connections(self) -> None:
        """Stop listening (connects get ECONNREFUSED) and drop open connections."""
        await self.stop()

    async def accept_connections(self) -> None:
        """Listen again on the same port."""
        await self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def base_url(self, vendor: str) -> str:
        """The base_url an adapter of that type is configured with (OpenAI's includes /v1,
        Gemini's /v1beta; Vertex AI's is the host alone)."""
        if vendor == "gemini":
            return f"{self.url}/v1beta"
        return f"{self.url}/v1" if vendor == "openai" else self.url

    def service_account(self, expires_in: int = 3600) -> str:
        """A service-account key file's JSON whose token_uri is this fake's token endpoint; the
        tokens it mints last `expires_in` seconds."""
        self.oauth.expires_in = expires_in
        return self.oauth.key_file()

    # scripting --------------------------------------------------------------------------------

    def script(self, route: str | None, *behaviours: Behaviour) -> None:
        """Queue behaviours for a route (None: any route), consumed one per request."""
        self._check(route)
        self._scripts[route].extend(behaviours)

    def set_default(self, behaviour: Behaviour, route: str | None = None) -> None:
        """What a route (None: every route) does once its queue is empty; initially Reply()."""
        self._check(route)
        self._defaults[route] = behaviour

    def hold(self) -> None:
        """Chat requests are recorded, then wait (before any byte of the answer) until release();
        streams with Reply.pause_after wait there too."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    async def wait_paused(self, n: int = 1, within: float = 5.0) -> None:
        """Until `n` streams wait at their Reply.pause_after."""
        await self._wait(lambda: self.paused >= n, within)

    def set_down(self) -> None:
        """Answer 503 to everything until set_up(); scripts are left untouched."""
        self._down = True

    def set_up(self) -> None:
        self._down = False

    def reset(self) -> None:
        self._scripts.clear()
        self._defaults.clear()
        self.requests.clear()
        self.counts.clear()
        self.disconnects = 0
        self.disconnected.clear()
        self._transports.clear()
        self.shape_errors.clear()
        self._down = False

    def _check(self, route: str | None) -> None:
        if route is not None and route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; routes: {', '.join(ROUTES)}")

    def _next(self, route: str) -> Behaviour:
        for queue in (self._scripts[route], self._scripts[None]):
            if queue:
                return queue.popleft()
        return self._defaults.get(route) or self._defaults.get(None) or Reply()

    # observation ------------------------------------------------------------------------------

    def count(self, route_or_path: str) -> int:
        if route_or_path.startswith("/"):
            return self.counts[route_or_path]
        return sum(1 for r in self.requests if r.route == route_or_path)

    @property
    def connections(self) -> int:
        """TCP connections accepted that carried a request (since start or reset()): a client
        that reuses pooled connections keeps this at its concurrency, one that does not adds one
        per request."""
        return len(self._transports)

    def requests_to(self, route: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.route == route]

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    async def wait_for_requests(self, n: int = 1, within: float = 5.0) -> None:
        await self._wait(lambda: len(self.requests) >= n, within)

    async def wait_for_ended(self, n: int = 1, within: float = 5.0) -> None:
        """Until `n` requests in all have ended: played to the end, or left by their client."""
        await self._wait(
            lambda: sum(r.finished or r.disconnected for r in self.requests) >= n, within
        )

    async def wait_for_disconnects(self, n: int = 1, within: float = 5.0) -> None:
        """Until `n` requests in all have seen their client close the connection early."""
        await self._wait(lambda: self.disconnects >= n, within)

    async def _wait(self, predicate: Any, within: float) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # serving ----------------------------------------------------------------------------------

    def _route(self, request: web.Request) -> str:
        # Matched on the path as sent (a model id is one segment even with an encoded "/" in it,
        # as a Bedrock inference-profile ARN has), decoded where a segment is read (_asked).
        path = request.rel_url.raw_path
        for name, (method, pattern, _vendor) in ROUTES.items():
            if request.method == method and re.fullmatch(pattern, path):
                if name == "openai.models" and "anthropic-version" in request.headers:
                    continue
                return name
        return "unknown"

    def _connection_of(self, request: web.Request) -> int:
        transport = request.transport
        if transport is None:  # already gone: nothing to count
            return 0
        for number, seen in enumerate(self._transports, 1):
            if seen is transport:
                return number
        self._transports.append(transport)
        return len(self._transports)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == TOKEN_PATH and request.method == "POST":
            status, answer = self.oauth.grant(dict(await request.post()))  # type: ignore[arg-type]
            return self._json(status, answer)
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        route = self._route(request)
        record = RecordedRequest(
            route,
            request.method,
            request.path,
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            raw,
            parsed,
        )
        record.connection = self._connection_of(request)
        self.requests.append(record)
        self.counts[request.path] += 1
        await self._notify()
        wire = WIRES[ROUTES[route][2]] if route in ROUTES else WIRES["openai"]
        if route == "unknown":
            record.finished = True
            return self._json(404, wire.error_body(Fail(404, message=f"no route {request.path}")))
        record.model, record.streaming = _asked(route, request, parsed)
        if ROUTES[route][2] == "bedrock":
            url = f"{request.scheme}://{request.host}{request.raw_path}"
            refused = self.aws.check(request.method, url, record.headers, raw)
            if refused:  # a signature the real service refuses fails the test too
                record.finished = True
                record.shape_error = f"{route}: SigV4: {refused}"
                self.shape_errors.append(record.shape_error)
                fail = Fail(403, kind="InvalidSignatureException", message=refused)
                assert isinstance(wire, BedrockWire)
                return self._json(403, wire.error_body(fail), wire.error_headers(fail))
        if ROUTES[route][2] == "vertex" and not self.oauth.authorized(
            request.headers.get("Authorization", "")
        ):
            record.finished = True
            return self._json(401, wire.error_body(Fail(401)))
        if route in CHAT_ROUTES | EMBED_ROUTES and isinstance(parsed, dict):
            vendor = ROUTES[route][2]
            streaming = record.streaming
            try:
                if (
                    vendor in ("gemini", "vertex")
                    and streaming
                    and request.query.get("alt") != "sse"
                ):
                    raise ShapeError("streamGenerateContent without alt=sse answers a JSON array")
                if route in EMBED_ROUTES:
                    _within_batch_limits(route, record.model, parsed)
                    check_embed_request(vendor, parsed)
                else:
                    check_request(vendor, parsed, stream=streaming)
            except ShapeError as exc:
                record.shape_error = f"{route}: {exc}"
                self.shape_errors.append(record.shape_error)
                record.finished = True
                why = f"fake upstream: the body does not match {vendor}'s published types: {exc}"
                return self._json(400, wire.error_body(Fail(400, message=why[:2000])))
        behaviour = Fail(503) if self._down else self._next(route)
        fake_aborted: list[bool] = []
        try:
            response = await self._play(request, record, wire, behaviour, fake_aborted)
        except (asyncio.CancelledError, ConnectionResetError):
            if not self._closing and not fake_aborted:
                record.disconnected = True
                self.disconnects += 1
                self.disconnected.set()
                await asyncio.shield(self._notify())
            raise
        record.finished = True
        await self._notify()
        return response

    async def _play(
        self,
        request: web.Request,
        record: RecordedRequest,
        wire: Wire,
        behaviour: Behaviour,
        fake_aborted: list[bool],
    ) -> web.StreamResponse:
        if record.route in CHAT_ROUTES or record.route in EMBED_ROUTES:
            await self._gate.wait()
        if isinstance(behaviour, Hang):
            if behaviour.seconds is None:
                await asyncio.Event().wait()
            await asyncio.sleep(behaviour.seconds or 0)
            behaviour = behaviour.then
        if isinstance(behaviour, Fail):
            headers = dict(behaviour.headers)
            if behaviour.retry_after is not None and not isinstance(wire, GeminiWire):  # Vertex too
                headers["Retry-After"] = behaviour.retry_after
            if isinstance(wire, BedrockWire):
                headers.update(wire.error_headers(behaviour))
            return self._json(behaviour.status, wire.error_body(behaviour), headers)
        if isinstance(behaviour, Raw):
            response = await self._open(request, behaviour.status, behaviour.content_type, {})
            await self._write_all(response, behaviour.pieces, behaviour.piece_delay)
            await response.write_eof()
            return response
        body = record.json if isinstance(record.json, dict) else {}
        model = record.model or "unknown"
        if record.route in EMBED_ROUTES:
            if isinstance(behaviour, Malformed):
                return web.Response(body=wire.malformed_body(), content_type="application/json")
            texts, dims = _embed_inputs(body)
            count = behaviour.vectors  # type: ignore[union-attr]
            if count is not None:  # a broken upstream: more or fewer vectors than inputs
                texts = [texts[i % len(texts)] if texts else "x" for i in range(count)]
            answer = wire.embeddings(behaviour, behaviour.model or model, texts, dims)  # type: ignore[union-attr]
            return self._json(200, answer, behaviour.headers)
        if record.route not in CHAT_ROUTES:
            if isinstance(behaviour, Malformed):
                return web.Response(body=wire.malformed_body(), content_type="application/json")
            return self._json(200, wire.models())
        streaming = record.streaming
        if isinstance(behaviour, Malformed):
            if not streaming:
                return web.Response(body=wire.malformed_body(), content_type="application/json")
            behaviour = Reply(error_after=behaviour.after)
            return await self._stream(request, wire, behaviour, model, fake_aborted, broken=True)
        if not streaming:
            reply_model = behaviour.model or model
            return self._json(200, wire.completion(behaviour, reply_model), behaviour.headers)
        return await self._stream(request, wire, behaviour, model, fake_aborted)

    async def _stream(
        self,
        request: web.Request,
        wire: Wire,
        reply: Reply,
        model: str,
        fake_aborted: list[bool],
        broken: bool = False,
    ) -> web.StreamResponse:
        frames = wire.frames(reply, reply.model or model)
        gap = "\n" if isinstance(wire, OllamaWire) else ": keep-alive\n\n"

        def encode(frames: Iterable[str | bytes]) -> list[bytes]:
            out: list[bytes] = []
            for frame in frames:
                if isinstance(frame, bytes):  # a binary framing: no comments, no line ends
                    out.append(frame)
                    continue
                text = f"{gap}{frame}" if reply.comments else frame
                out.append((text.replace("\n", "\r\n") if reply.crlf else text).encode())
            return out

        response = await self._open(request, 200, wire.stream_content_type, reply.headers)
        if reply.awkward:
            closing = [] if reply.end_early else frames.closing
            data = b"".join(encode([*frames.opening, *frames.content, *closing]))
            await self._write_all(response, awkward_pieces(data), reply.piece_delay)
            await response.write_eof()
            return response
        await self._write_all(response, encode(frames.opening), 0)
        pieces = encode(frames.content)
        for index in range(len(pieces) + 1):  # the last round only runs the after-N actions
            if index == reply.stall_after:
                await asyncio.Event().wait()  # until the client leaves
            if index == reply.pause_after:
                self._gate.clear()
                self.paused += 1
                await self._notify()
                await self._gate.wait()
            if index == reply.drop_after:
                await self._abort(request, fake_aborted)
            if index == reply.error_after:
                if broken:
                    await self._write_all(response, encode([wire.malformed_frame()]), 0)
                else:
                    await self._write_all(response, encode([wire.stream_error(reply.error)]), 0)
                    await response.write_eof()
                    return response
            if index == len(pieces):
                break
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            await response.write(pieces[index])
        closing = [] if reply.end_early else encode(frames.closing)
        if reply.end_apart is None:
            # The terminator goes in the same write as the last event, so the client reads both.
            *before, last = closing or [b""]
            await self._write_all(response, before, 0)
            await response.write_eof(last)
            return response
        await self._write_all(response, closing, 0)
        await asyncio.sleep(reply.end_apart)  # the last event is on the wire; the end is not
        await response.write_eof()
        return response

    async def _abort(self, request: web.Request, fake_aborted: list[bool]) -> None:
        """Cut the TCP connection, then wait to be cancelled. What was written has already gone to
        the kernel (small writes on an idle socket are sent at once), so abort() loses nothing."""
        transport = request.transport
        assert transport is not None
        fake_aborted.append(True)
        transport.abort()
        await asyncio.Event().wait()  # connection_lost cancels this handler

    @staticmethod
    async def _open(
        request: web.Request, status: int, content_type: str, headers: dict[str, str] | Any
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers={"Content-Type": content_type})
        response.headers.update(headers)
        response.headers["Cache-Control"] = "no-cache"
        response.enable_chunked_encoding()
        await response.prepare(request)
        return response

    @staticmethod
    async def _write_all(
        response: web.StreamResponse, pieces: Iterable[bytes], delay: float
    ) -> None:
        for piece in pieces:
            await response.write(piece)
            if delay:
                await asyncio.sleep(delay)

    @staticmethod
    def _json(status: int, body: Any, headers: Any = None) -> web.Response:
        response = web.Response(
            status=status, text=json.dumps(body), content_type="application/json"
        )
        if headers:
            response.headers.update(headers)
        return response


def _asked(route: str, request: web.Request, body: Any) -> tuple[str, bool]:
    """The model a request asks for and whether it asks for a stream, as its vendor says them."""
    body = body if isinstance(body, dict) else {}
    vendor = ROUTES[route][2] if route in ROUTES else ""
    if vendor in ("gemini", "vertex"):  # .../models/{model}:{method}
        model, _, method = request.path.split("/")[-1].partition(":")
        return model, method == "streamGenerateContent"
    if vendor == "bedrock":  # /model/{modelId}/{converse|converse-stream|invoke}, id encoded
        parts = request.rel_url.raw_path.split("/")
        if len(parts) != 4:
            return "", False
        return urllib.parse.unquote(parts[2]), parts[3] == "converse-stream"
    model = str(body.get("model") or "")
    if route == "azure.chat":  # Azure names the deployment in the path, not the model in the body
        model = model or request.path.split("/")[3]
    return model, route in CHAT_ROUTES and body.get("stream", vendor == "ollama") is True


# The most texts one embeddings call takes, where the vendor says so (Gemini API, Vertex AI's
# :predict, Bedrock's Cohere); more is the vendor's 400 INVALID_ARGUMENT / ValidationException.
BATCH_LIMITS = {"gemini.embed": 100, "vertex.embed": 250, "bedrock.embed": 96}


def _within_batch_limits(route: str, model: str, body: dict[str, Any]) -> None:
    """ShapeError for a batch bigger than the vendor takes (gemini-embedding models on Vertex
    take one instance a call)."""
    texts, _ = _embed_inputs(body)
    limit = BATCH_LIMITS.get(route)
    if route == "vertex.embed" and "gemini-embedding" in model:
        limit = 1
    if limit is not None and len(texts) > limit:
        raise ShapeError(f"{len(texts)} texts in one call; {model or route} takes at most {limit}")


def _embed_inputs(body: dict[str, Any]) -> tuple[list[str], int]:
    """The texts an embeddings request asks for, and the dimensions (3 if it names none)."""
    rows = body.get("requests")
    if isinstance(rows, list):  # Gemini's batchEmbedContents: one request per text
        texts = [
            "".join(p.get("text", "") for p in r.get("content", {}).get("parts", []))
            for r in rows
            if isinstance(r, dict)
        ]
        dims = rows[0].get("outputDimensionality") if rows and isinstance(rows[0], dict) else None
        return texts, int(dims or 3)
    instances = body.get("instances")
    if isinstance(instances, list):  # Vertex AI's :predict: one instance per text
        texts = [str(i.get("content", "")) for i in instances if isinstance(i, dict)]
        parameters = body.get("parameters")
        dims = parameters.get("outputDimensionality") if isinstance(parameters, dict) else None
        return texts, int(dims or 3)
    if isinstance(body.get("texts"), list):  # Bedrock's Cohere embed
        return [str(t) for t in body["texts"]], int(body.get("output_dimension") or 3)
    if isinstance(body.get("inputText"), str):  # Bedrock's Titan embed: one text a call
        return [body["inputText"]], int(body.get("dimensions") or 3)
    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
    return texts, int(body.get("dimensions") or 3)
