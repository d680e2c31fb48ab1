"""Is there a faster upstream HTTP client than aiohttp? aiohttp against maintained alternatives
(httpx; the Rust-backed pyreqwest, rnet and primp; libcurl-backed curl_cffi; the asyncio-native
aiosonic and BlackSheep's client, which hand nothing across threads), each in its own
process pinned to the client CPU (uvloop, like `hapaxd serve`), against one raw fake
OpenAI-compatible upstream on 127.0.0.1 in a process of its own on the other CPU. A second
aiohttp process runs every measurement too: the A/A control, whose ratio to aiohttp is the noise.

For each client, in alternating rounds (each cell measured for every client back to back, the
order rotated every round; ratios to aiohttp are taken per round, then the median):

1. CPU per call (the client process's CPU time, all threads, / calls) for a unary JSON POST of a
   chat completion at concurrency 1 and 16 over a kept-alive pool (100 connections at most, the
   gateway's default `max_connections`), with p50/p99 of the whole call.
2. Streaming: 16 SSE chunks per stream, written 1 ms apart; the upstream stamps each chunk with
   CLOCK_MONOTONIC just before writing it and the client reads the stamp when the chunk is handed
   to it, so each chunk's latency is write-to-read across the two processes. p50/p99 over every
   chunk and CPU per stream, at concurrency 1 and 16.
3. Cancellation: the task reading a long stream (1 chunk a ms) is cancelled after 3 chunks; how
   long until the upstream sees its connection closed (its `connection_lost`), or not within 3 s.
   Each adapter streams with its library's own idiom (`async with ... as response`), so what a
   cancelled read does to the connection is the library's doing. Then one call must still work.
4. Pool reuse: on a fresh client, 200 sequential calls, then 400 at concurrency 16, then 50
   sequential and 64 concurrent streams; how many TCP connections the upstream accepted in each
   phase (should be 1, then at most 16, then none).

    python -m benchmarks.http_clients [--quick] [--rounds N] [--clients aiohttp httpx ...]
                                      [--json PATH] [--no-pin]

benchmarks/README.md ("Upstream HTTP client: benchmarks.http_clients") has figures and verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import math
import multiprocessing
import multiprocessing.connection
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from benchmarks import harness
from benchmarks.fake_upstream import COMPLETION, MODEL
from benchmarks.report import empty_figures
from benchmarks.report import figure as _f

MAX_CONNECTIONS = 100  # the gateway's default ProviderSpec.max_connections
CELLS = (("unary", 1), ("unary", 16), ("stream", 1), ("stream", 16))
BASELINE, CONTROL = "aiohttp", "aiohttp_again"
CANCEL_AFTER_CHUNKS = 3
CANCEL_STREAM_CHUNKS = 20_000  # 1 ms apart: it never ends by itself within a trial
CANCEL_WAIT_S = 3.0  # how long the upstream is watched for the close (and cleanup awaited)

# What every aim is judged on: a run that came back without these measured nothing.
FIGURES = (
    "clients.*.unary_1.cpu_us+", "clients.*.unary_16.cpu_us+",
    "clients.*.stream_1.cpu_us+", "clients.*.stream_16.cpu_us+",
    "clients.*.stream_1.chunk_p50_ms+", "clients.*.stream_1.chunk_p99_ms+",
    "clients.*.stream_16.chunk_p50_ms+", "clients.*.stream_16.chunk_p99_ms+",
    "clients.*.cancel.trials+", "clients.*.pool.sequential_calls+",
    "clients.*.pool.concurrent_calls+",
    "ratios.*.*.cpu+", "ratios.*.*.p50+",
)  # fmt: skip

# --- the request ----------------------------------------------------------------------------------

URL_PATH = "/v1/chat/completions"
REQUEST = json.dumps(
    {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello from the fake upstream, in five words."},
        ],
        "max_tokens": 16,
        "temperature": 0,
    }
).encode()
STREAM_REQUEST = REQUEST[:-1] + b', "stream": true}'
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bench-key"}


def stream_headers(chunks: int, gap_us: int, stream_id: str = "") -> dict[str, str]:
    """What the fake upstream reads to shape a stream: how many stamped chunks, how far apart."""
    return {
        **HEADERS,
        "X-Bench-Chunks": str(chunks),
        "X-Bench-Gap-Us": str(gap_us),
        "X-Bench-Id": stream_id,
    }


# --- the fake upstream: a raw asyncio.Protocol HTTP/1.1 server ------------------------------------
#
# Raw, not aiohttp.web: it must count TCP connections, notice a closed connection mid-stream at
# once, stamp each chunk right before writing it, and cost the CPU it shares as little as possible.

_UNARY_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    % len(COMPLETION)
    + COMPLETION
)
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
# A chunk is `data: {"t":<ns>,` and then the rest of an OpenAI chat.completion.chunk.
_STAMP = b'data: {"t":'
_CHUNK_TAIL = (
    json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}],
        }
    )[1:].encode()
    + b"\n\n"
)
_DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


class _UpstreamState:
    def __init__(self) -> None:
        self.made = 0  # TCP connections accepted
        self.open = 0
        self.streams_done = 0
        self.aborted: dict[str, int] = {}  # stream id -> CLOCK_MONOTONIC ns its connection closed
        self.live: dict[str, _UpstreamConnection] = {}


class _UpstreamConnection(asyncio.Protocol):
    def __init__(self, state: _UpstreamState) -> None:
        self.state = state
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.stream_id: str | None = None  # a stream being written
        self.left = 0
        self.gap = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        self.state.made += 1
        self.state.open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.open -= 1
        if self.stream_id is not None:
            self.state.aborted[self.stream_id] = time.monotonic_ns()
            self.state.live.pop(self.stream_id, None)
            self.stream_id = None
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.stream_id is None:
            self._serve()

    def _serve(self) -> None:
        """Answer every whole request in the buffer, until one starts a stream."""
        buf = self.buffer
        while self.stream_id is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            path = lines[0].split(" ", 2)[1]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            start = end + 4
            if headers.get("transfer-encoding", "").lower() == "chunked":
                done = _chunked_end(buf, start)
                if done is None:
                    return
                del buf[:done]
            else:
                length = int(headers.get("content-length", "0"))
                if len(buf) < start + length:
                    return
                del buf[: start + length]
            self._answer(path, headers)

    def _answer(self, path: str, headers: dict[str, str]) -> None:
        assert self.transport is not None
        if not path.startswith(URL_PATH):
            self.transport.write(_NOT_FOUND)
            return
        chunks = headers.get("x-bench-chunks")
        if chunks is None:
            self.transport.write(_UNARY_RESPONSE)
            return
        self.stream_id = headers.get("x-bench-id") or f"anon-{id(self)}-{self.state.made}"
        self.state.live[self.stream_id] = self
        self.left = int(chunks)
        self.gap = int(headers.get("x-bench-gap-us", "1000")) / 1e6
        self.transport.write(_STREAM_HEAD)
        self.timer = self.loop.call_later(self.gap, self._next_chunk)

    def _next_chunk(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.stream_id is None:
            return
        event = b"%s%d,%s" % (_STAMP, time.monotonic_ns(), _CHUNK_TAIL)
        self.left -= 1
        if self.left > 0:
            transport.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.timer = self.loop.call_later(self.gap, self._next_chunk)
            return
        transport.write(b"%x\r\n%s\r\n%s" % (len(event), event, _DONE))
        self.timer = None
        self.state.live.pop(self.stream_id, None)
        self.stream_id = None
        self.state.streams_done += 1
        if self.buffer:
            self._serve()


def _chunked_end(buf: bytearray, pos: int) -> int | None:
    """Where a chunked request body starting at `pos` ends, or None if it has not all arrived."""
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n", line_end + 2)  # no trailers expected: an empty line
            return None if trailer_end < 0 else trailer_end + 2
        pos = line_end + 2 + size + 2
        if len(buf) < pos:
            return None


async def _upstream_main(conn: multiprocessing.connection.Connection) -> None:
    loop = asyncio.get_running_loop()
    state = _UpstreamState()
    server = await loop.create_server(lambda: _UpstreamConnection(state), "127.0.0.1", 0)
    conn.send(("ready", server.sockets[0].getsockname()[1]))
    stopping = loop.create_future()

    def command() -> None:
        try:
            message = conn.recv()
        except EOFError:
            message = ("stop",)
        what = message[0]
        if what == "stats":
            conn.send(("ok", {"made": state.made, "open": state.open, "done": state.streams_done}))
        elif what == "aborted":
            conn.send(("ok", state.aborted.get(message[1])))
        elif what == "kill":
            live = state.live.get(message[1])
            if live is not None and live.transport is not None:
                live.transport.abort()
            conn.send(("ok", live is not None))
        elif what == "stop":
            if not stopping.done():
                stopping.set_result(None)
        else:
            conn.send(("error", f"unknown command {what!r}"))

    loop.add_reader(conn.fileno(), command)
    await stopping
    loop.remove_reader(conn.fileno())
    server.close()


# --- the clients: one small adapter each, the same interface --------------------------------------


class Client:
    """One upstream HTTP client with a keep-alive pool of at most `max_connections`. Made and
    closed inside the running loop. `post` returns the whole body of a unary POST; `stream`
    yields a streamed POST's body as the library hands it over, and closing it (or cancelling
    the task reading it) ends the response the library's own way."""

    name = ""
    distribution = ""  # the PyPI name, for its version

    def __init__(self, url: str, max_connections: int = MAX_CONNECTIONS) -> None:
        self.url = url
        self.max_connections = max_connections

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def post(self, body: bytes, headers: dict[str, str]) -> bytes:
        raise NotImplementedError

    def stream(self, body: bytes, headers: dict[str, str]) -> AsyncIterator[bytes]:
        raise NotImplementedError


def _check(status: int) -> None:
    if status != 200:
        raise RuntimeError(f"HTTP {status}")


class Aiohttp(Client):
    """As hapaxd.providers.http_client.HttpClient uses it: one session, TCPConnector(limit=...),
    `readany()` for stream bodies; leaving `async with` mid-body closes the connection."""

    name, distribution = "aiohttp", "aiohttp"

    async def open(self) -> None:
        import aiohttp

        self.session: aiohttp.ClientSession = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=60, connect=10),
            trust_env=False,
        )

    async def close(self) -> None:
        await self.session.close()

    async def post(self, body: bytes, headers: dict[str, str]) -> bytes:
        async with self.session.post(self.url, data=body, headers=headers) as response:
            data: bytes = await response.read()
            _check(response.status)
            return data

    async def stream(self, body: bytes, headers: dict[str, str]) -> AsyncIterator[bytes]:
        async with self.session.post(self.url, data=body, headers=headers) as response:
            _check(response.status)
            while data := await response.content.readany():
                yield data


class Httpx(Client):
    name, distribution = "httpx", "httpx"

    async def open(self) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
            ),
            timeout=httpx.Timeout(60, connect=10),
            trust_env=False,
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def post(self, body: bytes, headers: dict[str, str]) -> bytes:
        response = await self.client.post(self.url, content=body, headers=headers)
        _check(response.status_code)
        return response.content

    async def stream(self, body: bytes, headers: dict[str, str]) -> AsyncIterator[bytes]:
        async with self.client.stream("POST", self.url, content=body, headers=headers) as response:
            _check(response.status_code)
            async for data in response.aiter_raw():
                yield data


class Pyreqwest(Client):
    """pyreqwest: Rust reqwest/hyper on a tokio runtime, asyncio-native futures. A streamed
    response is handed over only once `streamed_read_buffer_limit` bytes (64 KiB by default) have
    been read ahead, or the body ended: a whole LLM answer. 0 hands each chunk over as it comes."""

    name, distribution = "pyreqwest", "pyreqwest"

    async def open(self) -> None:
        from datetime import timedelta

        from pyreqwest.client import ClientBuilder

        self.client = (
            ClientBuilder()
            .max_connections(self.max_connections)
            .timeout(timedelta(seconds=60))
            .connect_timeout(timedelta(seconds=10))
            .no_proxy()
            .build()
        )

    async def close(self) -> None:
        await self.client.close()

    async def post(self, body: bytes, headers: dict[str, str]) -> bytes:
        response = await self.client.post(self.url).headers(headers).body_bytes(body).build().send()
        data = await response.bytes()
        _check(response.status)
        return data.to_bytes()

    async def stream(self, body: bytes, headers: dict[str, str]) -> AsyncIterator[bytes]:
        request = (
            self.client.post(self.url)
            .headers(headers)
            .body_bytes(body)
            .streamed_read_buffer_limit(0)
            .build_streamed()
        )
        async with request as response:
            _check(response.status)
            reader = response.body_reader
            while (data := await reader.read_chunk()) is not None:
                yield data.to_bytes()


class Rnet(Client):
    """rnet: Rust (a reqwest fork, wreq) on tokio."""

    name, distribution = "rnet", "rnet"

    async def open(self) -> None:
        import rnet

        self.client = rnet.Client(
            pool_max_size=self.max_connections, timeout=60, connect_timeout=10, no_proxy=True
        )

    async def close(self) -> None:
        pass  # no close(): dropped with the object

    async def post(self, body: bytes, headers: dict[str, str]) -> bytes:
        response = await self.client.post(self.url, body=body, headers=headers)
        data = await response.bytes()
        _check(response.status)
        return data

    async def stream(self, body: bytes, headers: dict[str, str]) -> AsyncIterator[bytes]:
        response = await self.client.post(self.url, body=body, headers=headers)
        async with response:
            _check(response.status)
            async with response.stream() as streamer:
                async for data in streamer:
                    yield data


class Primp(Client):
    """primp: Rust (reqwest) on tokio; no pool-size setting."""

    name, distribution = "primp", "primp"

    async def open(self) -> None:
        import primp

        self.client = primp.AsyncClient(
            timeout=60, connect_timeout=10, follow_redirects=False, cookie_store=False,
            referer=False,
        )  # fmt: skip

    async def close(self) -> None:
        pass

    async def post(self, body: bytes, headers: dict[str, str]) -> bytes:
        response = await self.client.post(self.url, content=body, headers=headers)
        _check(response.status_code)
        return response.content

    async def stream(self, body: bytes, headers: dict[str, str]) -> AsyncIterator[bytes]:
        response = await self.client.post(self.url, content=body, headers=headers, stream=True)
        async with response:
            _check(response.status_code)
            async for data in response.aiter_bytes():
                yield data


class CurlCffi(Client):
    """curl_cffi: libcurl's multi interface driven from the asyncio loop."""

    name, distribution = "curl_cffi", "curl_cffi"

    async def open(self) -> None:
        from curl_cffi.requests import AsyncSession

        self.curl: AsyncSession[Any] = AsyncSession(
            max_clients=self.max_connections, timeout=60, trust_env=False, allow_redirects=False
        )

    async def close(self) -> None:
        await self.curl.close()

    async def post(self, body: bytes, headers: dict[str, str]) -> bytes:
        response = await self.curl.post(self.url, data=body, headers=headers)
        _check(response.status_code)
        data: bytes = response.content
        return data

    async def stream(self, body: bytes, headers: dict[str, str]) -> AsyncIterator[bytes]:
        async with self.curl.stream("POST", self.url, data=body, headers=headers) as response:
            _check(response.status_code)
            async for data in response.aiter_content():
                yield data


class Aiosonic(Client):
    """aiosonic: pure-Python asyncio HTTP/1.1 client (its own parser); no thread hand-off."""

    name, distribution = "aiosonic", "aiosonic"

    async def open(self) -> None:
        import aiosonic
        from aiosonic.pools import PoolConfig
        from aiosonic.timeout import Timeouts

        self.client = aiosonic.HTTPClient(
            connector=aiosonic.TCPConnector(
                pool_configs={":default": PoolConfig(size=self.max_connections)},
                timeouts=Timeouts(sock_connect=10, request_timeout=60),
            )
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def post(self, body: bytes, headers: dict[str, str]) -> bytes:
        response = await self.client.post(self.url, data=body, headers=headers)
        data: bytes = await response.content()
        _check(response.status_code)
        return data

    async def stream(self, body: bytes, headers: dict[str, str]) -> AsyncIterator[bytes]:
        response = await self.client.post(self.url, data=body, headers=headers)
        _check(response.status_code)
        async for data in response.read_chunks():
            yield data


class Blacksheep(Client):
    """BlackSheep's client: asyncio, httptools (llhttp) parsing, Cython; HTTP/1.1 only here."""

    name, distribution = "blacksheep", "blacksheep"

    async def open(self) -> None:
        from blacksheep.client import ClientSession
        from blacksheep.client.pool import ConnectionPools

        self.client = ClientSession(
            http2=False,
            follow_redirects=False,
            cookie_jar=False,
            connection_timeout=10,
            request_timeout=60,
            pools=ConnectionPools(http2=False),
        )
        self.pools = self.client.pools

    async def close(self) -> None:
        await self.client.close()
        await self.pools.dispose()

    @staticmethod
    def _request(body: bytes, headers: dict[str, str]) -> tuple[Any, list[tuple[bytes, bytes]]]:
        from blacksheep import Content

        kind = headers.get("Content-Type", "application/octet-stream").encode()
        rest = [(k.encode(), v.encode()) for k, v in headers.items() if k != "Content-Type"]
        return Content(kind, body), rest

    async def post(self, body: bytes, headers: dict[str, str]) -> bytes:
        content, rest = self._request(body, headers)
        response = await self.client.post(self.url, content, headers=rest)
        data: bytes = await response.read()
        _check(response.status)
        return data

    async def stream(self, body: bytes, headers: dict[str, str]) -> AsyncIterator[bytes]:
        content, rest = self._request(body, headers)
        response = await self.client.post(self.url, content, headers=rest)
        _check(response.status)
        async for data in response.stream():
            yield data


ADAPTERS: dict[str, type[Client]] = {
    c.name: c for c in (Aiohttp, Httpx, Pyreqwest, Rnet, Primp, CurlCffi, Aiosonic, Blacksheep)
}
ALTERNATIVES = tuple(name for name in ADAPTERS if name != BASELINE)


def adapter_for(client: str) -> type[Client]:
    """The adapter of a client as measured: the A/A control is a second aiohttp."""
    return ADAPTERS[BASELINE if client == CONTROL else client]


def client_version(client: str) -> str | None:
    try:
        return importlib.metadata.version(adapter_for(client).distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- what a client process does -------------------------------------------------------------------


async def read_stream(chunks: AsyncIterator[bytes], latencies_ns: list[int]) -> int:
    """Split the body into SSE events, and for each stamped chunk append read time - stamp."""
    pending = b""
    events = 0
    async for data in chunks:
        now = time.monotonic_ns()
        pending += data
        while (end := pending.find(b"\n\n")) >= 0:
            event, pending = pending[:end], pending[end + 2 :]
            if event.startswith(_STAMP):
                latencies_ns.append(now - int(event[11 : event.index(b",", 11)]))
                events += 1
    return events


def _ms(sorted_ns: list[int], q: float) -> float:
    return harness.percentile(sorted_ns, q) / 1e6 if sorted_ns else math.nan


async def _closed_loop(
    concurrency: int, count: int, one: Callable[[], Any]
) -> tuple[list[int], int, str | None, float, float]:
    """`count` calls of `one` from `concurrency` workers; (latencies ns, errors, first error,
    wall s, CPU s of this process)."""
    latencies: list[int] = []
    errors = 0
    first_error: str | None = None
    left = count

    async def worker() -> None:
        nonlocal left, errors, first_error
        while left > 0:
            left -= 1
            began = time.perf_counter_ns()
            try:
                await one()
            except Exception as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
                continue
            latencies.append(time.perf_counter_ns() - began)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, first_error, time.perf_counter() - wall, time.process_time() - cpu


async def unary_cell(client: Client, concurrency: int, count: int) -> dict[str, Any]:
    async def one() -> None:
        data = await client.post(REQUEST, HEADERS)
        if len(data) != len(COMPLETION):
            raise RuntimeError(f"body of {len(data)} bytes, expected {len(COMPLETION)}")

    latencies, errors, first_error, wall, cpu = await _closed_loop(concurrency, count, one)
    latencies.sort()
    calls = len(latencies)
    return {
        "calls": calls,
        "errors": errors,
        "first_error": first_error,
        "rps": calls / wall if wall > 0 else math.nan,
        "cpu_us": cpu / calls * 1e6 if calls else math.nan,
        "p50_ms": _ms(latencies, 50),
        "p99_ms": _ms(latencies, 99),
    }


async def stream_cell(
    client: Client, concurrency: int, count: int, chunks: int, gap_us: int
) -> dict[str, Any]:
    chunk_ns: list[int] = []
    headers = stream_headers(chunks, gap_us)

    async def one() -> None:
        got = await read_stream(client.stream(STREAM_REQUEST, headers), chunk_ns)
        if got != chunks:
            raise RuntimeError(f"{got} stamped chunks, expected {chunks}")

    latencies, errors, first_error, wall, cpu = await _closed_loop(concurrency, count, one)
    latencies.sort()
    chunk_ns.sort()
    streams = len(latencies)
    return {
        "streams": streams,
        "chunks": len(chunk_ns),
        "errors": errors,
        "first_error": first_error,
        "streams_per_s": streams / wall if wall > 0 else math.nan,
        "cpu_us": cpu / streams * 1e6 if streams else math.nan,
        "chunk_p50_ms": _ms(chunk_ns, 50),
        "chunk_p99_ms": _ms(chunk_ns, 99),
        "chunk_max_ms": chunk_ns[-1] / 1e6 if chunk_ns else math.nan,
        "stream_p50_ms": _ms(latencies, 50),
    }


async def cancel_trial(client: Client, stream_id: str, gap_us: int) -> dict[str, Any]:
    """Read a long stream, cancel the reading task after a few chunks; when was it cancelled, did
    its cleanup end (and when), and does the client still answer a call afterwards."""
    read = asyncio.Event()
    got: list[int] = []

    async def reader() -> None:
        headers = stream_headers(CANCEL_STREAM_CHUNKS, gap_us, stream_id)
        pending = b""
        async for data in client.stream(STREAM_REQUEST, headers):
            pending += data
            got.append(pending.count(b"\n\n"))
            if got[-1] >= CANCEL_AFTER_CHUNKS:
                read.set()

    task = asyncio.get_running_loop().create_task(reader())
    result: dict[str, Any] = {"error": None}
    try:
        await asyncio.wait_for(read.wait(), 10)
    except TimeoutError:
        result["error"] = f"no {CANCEL_AFTER_CHUNKS} chunks within 10 s"
        if task.done() and task.exception() is not None:
            result["error"] = repr(task.exception())[:300]
    result["cancelled_ns"] = time.monotonic_ns()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_WAIT_S)
    result["cleanup_ms"] = (time.monotonic_ns() - result["cancelled_ns"]) / 1e6 if done else None
    result["second_cancel_ns"] = None
    if not done:  # a second cancel, which reaches whatever the cleanup awaits
        result["second_cancel_ns"] = time.monotonic_ns()
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    try:
        await asyncio.wait_for(client.post(REQUEST, HEADERS), 5)
        result["call_after_ok"] = True
    except Exception:
        result["call_after_ok"] = False
    return result


async def _worker_main(
    conn: multiprocessing.connection.Connection, client_name: str, url: str
) -> None:
    loop = asyncio.get_running_loop()
    adapter = adapter_for(client_name)
    client = adapter(url)
    await client.open()
    fresh: Client | None = None
    conn.send(("ready", client_version(client_name)))
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def receive() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except EOFError:
            inbox.put_nowait(("stop",))

    # The loop keeps running between commands: a library that closes a cancelled stream's
    # connection from a callback (or its own thread) gets to do it.
    loop.add_reader(conn.fileno(), receive)
    while True:
        message = await inbox.get()
        what, args = message[0], message[1:]
        if what == "stop":
            break
        try:
            if what == "fresh_open":
                fresh = adapter(url)
                await fresh.open()
                reply: Any = None
            elif what == "fresh_close":
                assert fresh is not None
                await fresh.close()
                fresh, reply = None, None
            elif what == "unary":
                concurrency, count, use_fresh = args
                target = fresh if use_fresh and fresh is not None else client
                reply = await unary_cell(target, concurrency, count)
            elif what == "stream":
                concurrency, count, chunks, gap_us, use_fresh = args
                target = fresh if use_fresh and fresh is not None else client
                reply = await stream_cell(target, concurrency, count, chunks, gap_us)
            elif what == "cancel":
                reply = await cancel_trial(client, *args)
            else:
                raise ValueError(f"unknown command {what!r}")
            conn.send(("ok", reply))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"[:500]))
    loop.remove_reader(conn.fileno())
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), 5)


def _child(
    role: str, conn: multiprocessing.connection.Connection, cpu: int | None, *args: Any
) -> None:
    if cpu is not None:  # before any library starts a thread: they all inherit it
        harness.set_process_affinity({cpu})
    try:
        if role == "upstream":
            harness.run_loop("uvloop", _upstream_main(conn))
        else:
            harness.run_loop("uvloop", _worker_main(conn, *args))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


class Process:
    """A child process (the upstream, or one client) that answers commands over a pipe."""

    def __init__(self, name: str, role: str, cpu: int | None, *args: Any) -> None:
        self.name = name
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_child, args=(role, child, cpu, *args), name=f"bench-{name}", daemon=True
        )
        self.process.start()
        child.close()
        self.ready: Any = None

    def wait_ready(self, timeout: float = 60.0) -> Any:
        status, value = self._recv(timeout)
        if status != "ready":
            raise RuntimeError(f"{self.name}: failed to start: {value}")
        self.ready = value
        return value

    def _recv(self, timeout: float) -> tuple[str, Any]:
        if not self.conn.poll(timeout):
            raise RuntimeError(f"{self.name}: no answer within {timeout:g} s")
        try:
            message: tuple[str, Any] = self.conn.recv()
            return message
        except EOFError:
            self.process.join(5)
            raise RuntimeError(f"{self.name}: exited ({self.process.exitcode})") from None

    def ask(self, *message: Any, timeout: float = 300.0) -> Any:
        self.conn.send(message)
        status, value = self._recv(timeout)
        if status != "ok":
            raise RuntimeError(f"{self.name}: {message[0]} failed: {value}")
        return value

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.conn.close()


# --- the run --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Config:
    clients: tuple[str, ...] = (BASELINE, CONTROL, *ALTERNATIVES)
    rounds: int = 5
    unary_calls: dict[int, int] = dataclasses.field(default_factory=lambda: {1: 1500, 16: 3000})
    streams: dict[int, int] = dataclasses.field(default_factory=lambda: {1: 40, 16: 240})
    chunks: int = 16
    gap_us: int = 1000
    cancel_trials: int = 2  # per round
    pool_calls: tuple[int, int, int, int] = (200, 400, 50, 64)  # seq, concurrent, streams seq, conc
    warmup_calls: int = 200
    pin: bool = True

    @classmethod
    def quick(cls) -> Config:
        return cls(
            rounds=1, unary_calls={1: 150, 16: 300}, streams={1: 6, 16: 32}, cancel_trials=2,
            pool_calls=(40, 80, 8, 32), warmup_calls=30,
        )  # fmt: skip


def _cell_key(kind: str, concurrency: int) -> str:
    return f"{kind}_{concurrency}"


def _median_of(rounds: list[dict[str, Any]], key: str) -> float:
    return harness.median([r[key] for r in rounds if r.get(key) is not None])


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def run(config: Config, verbose: bool = False) -> dict[str, Any]:
    env = harness.environment()
    missing = [c for c in config.clients if client_version(c) is None]
    clients = [c for c in config.clients if c not in missing]
    if BASELINE not in clients:
        raise ValueError(f"{BASELINE} (the baseline) must be measured")
    upstream_cpu, client_cpu = harness.cpu_plan(config.pin)
    log: Callable[[str], None] = (
        (lambda line: print(line, file=sys.stderr, flush=True)) if verbose else (lambda _: None)
    )
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        c: {_cell_key(*cell): [] for cell in CELLS} for c in clients
    }
    cancels: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    pools: dict[str, dict[str, Any]] = {}
    neighbours: list[tuple[float, float]] = []  # (CPU s others took, wall s)

    upstream = Process("upstream", "upstream", upstream_cpu)
    workers: dict[str, Process] = {}
    with harness.pinned(upstream_cpu):  # this process waits on pipes, beside the upstream
        try:
            port = upstream.wait_ready()
            url = f"http://127.0.0.1:{port}{URL_PATH}"
            for name in clients:
                workers[name] = Process(name, "client", client_cpu, name, url)
            versions = {name: w.wait_ready() for name, w in workers.items()}

            def ask(name: str, *message: Any) -> Any:
                """One measurement, with what other processes took of the client CPU meanwhile."""
                worker = workers[name]
                own, busy, wall = (
                    harness.process_cpu_seconds(worker.pid),
                    harness.cpu_busy_seconds(client_cpu) if client_cpu is not None else math.nan,
                    time.perf_counter(),
                )
                value = worker.ask(*message)
                if client_cpu is not None:
                    took = harness.cpu_busy_seconds(client_cpu) - busy
                    took -= harness.process_cpu_seconds(worker.pid) - own
                    neighbours.append((took, time.perf_counter() - wall))
                return value

            for name in clients:  # warm-up: pools open, code paths run, caches filled
                ask(name, "unary", 16, config.warmup_calls, False)
                ask(name, "stream", 16, 16, config.chunks, config.gap_us, False)
            for round_no in range(config.rounds):
                order = clients[round_no % len(clients) :] + clients[: round_no % len(clients)]
                for kind, concurrency in CELLS:
                    for name in order:
                        if kind == "unary":
                            count = config.unary_calls[concurrency]
                            sample = ask(name, "unary", concurrency, count, False)
                        else:
                            count = config.streams[concurrency]
                            sample = ask(
                                name, "stream", concurrency, count, config.chunks, config.gap_us,
                                False,
                            )  # fmt: skip
                        samples[name][_cell_key(kind, concurrency)].append(sample)
                        log(f"round {round_no} {kind}:{concurrency} {name}: {sample}")
                for name in order:
                    for trial in range(config.cancel_trials):
                        cancels[name].append(
                            _cancel(upstream, ask, name, f"{name}-{round_no}-{trial}", config)
                        )
                        log(f"round {round_no} cancel {name}: {cancels[name][-1]}")
            for name in clients:
                pools[name] = _pool(upstream, ask, name, config)
                log(f"pool {name}: {pools[name]}")
        finally:
            for worker in workers.values():
                worker.stop()
            upstream.stop()

    result = _summarize(config, clients, samples, cancels, pools)
    result.update(
        {
            "config": dataclasses.asdict(config),
            "environment": env,
            "versions": {name: versions[name] for name in clients},
            "not_installed": missing,
            "pinned": {"upstream_cpu": upstream_cpu, "client_cpu": client_cpu},
            # What other processes took of the client CPU over all measurements (/proc/stat
            # ticks of 10 ms: only the total means anything).
            "neighbours_client_cpu_share": (
                max(0.0, sum(t for t, _ in neighbours)) / sum(w for _, w in neighbours)
                if neighbours
                else math.nan
            ),
        }
    )
    result["empty_figures"] = empty_figures(result, FIGURES)
    return result


def _cancel(
    upstream: Process, ask: Callable[..., Any], name: str, stream_id: str, config: Config
) -> dict[str, Any]:
    trial = ask(name, "cancel", stream_id, config.gap_us)
    cancelled, again = trial["cancelled_ns"], trial["second_cancel_ns"]
    deadline = max(cancelled + int(CANCEL_WAIT_S * 1e9), time.monotonic_ns() + 200_000_000)
    closed = upstream.ask("aborted", stream_id)
    while closed is None and time.monotonic_ns() < deadline:
        time.sleep(0.005)
        closed = upstream.ask("aborted", stream_id)
    if closed is None:
        upstream.ask("kill", stream_id)  # it never saw the client go: stop writing
    # Seen: closed at the upstream before the cleanup had to be cancelled a second time.
    seen = closed is not None and (again is None or closed < again)
    return {
        "closed_after_ms": (closed - cancelled) / 1e6 if seen else None,
        "seen": seen,
        "closed_only_on_second_cancel": closed is not None and not seen,
        "cleanup_ms": trial["cleanup_ms"],
        "call_after_ok": trial["call_after_ok"],
        "error": trial["error"],
    }


def _pool(upstream: Process, ask: Callable[..., Any], name: str, config: Config) -> dict[str, Any]:
    sequential, concurrent, streams_seq, streams_conc = config.pool_calls
    ask(name, "fresh_open")
    made = [upstream.ask("stats")["made"]]
    errors = 0
    try:
        for message in (
            ("unary", 1, sequential, True),
            ("unary", 16, concurrent, True),
            ("stream", 1, streams_seq, config.chunks, 0, True),
            ("stream", 16, streams_conc, config.chunks, 0, True),
        ):
            errors += ask(name, *message)["errors"]
            made.append(upstream.ask("stats")["made"])
    finally:
        ask(name, "fresh_close")
    return {
        "sequential_calls": sequential,
        "sequential_connections": made[1] - made[0],
        "concurrent_calls": concurrent,
        "concurrent_connections": made[2] - made[0],  # all the pool has opened so far
        "streams_sequential": streams_seq,
        "streams_sequential_new_connections": made[3] - made[2],
        "streams_concurrent": streams_conc,
        "streams_concurrent_new_connections": made[4] - made[3],
        "total_connections": made[4] - made[0],
        "errors": errors,
    }


def _summarize(
    config: Config,
    clients: list[str],
    samples: dict[str, dict[str, list[dict[str, Any]]]],
    cancels: dict[str, list[dict[str, Any]]],
    pools: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name in clients:
        per: dict[str, Any] = {}
        for cell, rounds in samples[name].items():
            keys = [k for k in rounds[0] if isinstance(rounds[0][k], int | float)]
            per[cell] = {k: _median_of(rounds, k) for k in keys}
            per[cell]["errors"] = sum(r["errors"] for r in rounds)
            per[cell]["first_error"] = next((r["first_error"] for r in rounds if r["errors"]), None)
            per[cell]["rounds"] = rounds
        trials = cancels[name]
        closed = sorted(t["closed_after_ms"] for t in trials if t["seen"])
        second = sum(1 for t in trials if t["closed_only_on_second_cancel"])
        cleanups = [t["cleanup_ms"] for t in trials if t["cleanup_ms"] is not None]
        per["cancel"] = {
            "trials": len(trials),
            "seen": len(closed),
            "closed_p50_ms": harness.median(closed),
            "closed_max_ms": closed[-1] if closed else math.nan,
            "cleanup_p50_ms": harness.median(cleanups),
            "cleanup_timed_out": len(trials) - len(cleanups),
            "closed_only_on_second_cancel": second,
            "call_after_ok": sum(1 for t in trials if t["call_after_ok"]),
            "errors": [t["error"] for t in trials if t["error"]],
            "trials_detail": trials,
        }
        per["pool"] = pools[name]
        figures[name] = per

    # Ratios to aiohttp per round (each cell measured back to back), then the median.
    metrics = {"unary": ("cpu_us", "p50_ms", "p99_ms"), "stream": ("cpu_us", "chunk_p50_ms",
               "chunk_p99_ms")}  # fmt: skip
    ratios: dict[str, dict[str, dict[str, Any]]] = {}
    for name in clients:
        if name == BASELINE:
            continue
        ratios[name] = {}
        for kind, concurrency in CELLS:
            cell = _cell_key(kind, concurrency)
            mine, base = samples[name][cell], samples[BASELINE][cell]
            cpu, p50, p99 = metrics[kind]
            ratios[name][cell] = {
                label: harness.median(
                    [_ratio(m[key], b[key]) for m, b in zip(mine, base, strict=True)]
                )
                for label, key in (("cpu", cpu), ("p50", p50), ("p99", p99))
            }
            ratios[name][cell]["cpu_rounds"] = [
                _ratio(m[cpu], b[cpu]) for m, b in zip(mine, base, strict=True)
            ]
    control = ratios.get(CONTROL, {})
    verdict = _verdict(clients, figures, ratios, control)
    return {"clients": figures, "ratios": ratios, "control": control, "verdict": verdict}


NOISE_FLOOR = 0.03  # a win must beat aiohttp by more than this, or the A/A control's spread
WIDE_CONTROL = {"cpu": 0.08, "p50": 0.15, "p99": 0.30}  # rerun when the A/A is off by more
# aiohttp sits at the floor of the other two, so there a win is matching it: every cancelled
# stream's connection closed at the upstream within PROMPT_MS, and connections ≈ concurrency.
PROMPT_MS = 10.0
POOL_SLACK = 2  # connections over the concurrency still counted as reuse


def _band(control: dict[str, dict[str, float]], cell: str, metric: str) -> float:
    value = control.get(cell, {}).get(metric, math.nan)
    return NOISE_FLOOR if math.isnan(value) else max(NOISE_FLOOR, abs(value - 1))


def _verdict(
    clients: list[str],
    figures: dict[str, Any],
    ratios: dict[str, dict[str, dict[str, Any]]],
    control: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """Switch only if an alternative wins on all four: CPU per call (every cell) and streaming
    chunk latency (p50 and p99 at both concurrencies), each lower than aiohttp's by more than the
    A/A band; cancellation reaching the upstream (every trial's connection closed at the upstream
    within PROMPT_MS of the cancel, and the client still answering after) and pool reuse (1
    connection for sequential calls, at most concurrency + POOL_SLACK for concurrent ones, at
    most POOL_SLACK new for the streams after them, no errors), which aiohttp meets."""
    wide = sorted(
        f"{cell} {metric} x{value:.3f}"
        for cell, by in control.items()
        for metric, value in by.items()
        if metric in WIDE_CONTROL
        and not math.isnan(value)
        and abs(value - 1) > WIDE_CONTROL[metric]
    )
    wins: dict[str, dict[str, bool]] = {}
    baseline: dict[str, bool] = {}
    for name in clients:
        if name == CONTROL:
            continue
        cancel, pool = figures[name]["cancel"], figures[name]["pool"]
        met = {
            "cancellation": cancel["trials"] > 0
            and cancel["call_after_ok"] == cancel["trials"]
            and all(
                t["closed_after_ms"] is not None and t["closed_after_ms"] <= PROMPT_MS
                for t in cancel["trials_detail"]
            ),
            "pool": pool["errors"] == 0
            and pool["sequential_connections"] <= 1
            and pool["concurrent_connections"] <= 16 + POOL_SLACK
            and pool["streams_sequential_new_connections"]
            + pool["streams_concurrent_new_connections"]
            <= POOL_SLACK,
        }
        if name == BASELINE:
            baseline = met
            continue
        r = ratios[name]
        wins[name] = {
            "cpu": all(r[c]["cpu"] < 1 - _band(control, c, "cpu") for c in r),
            "stream_latency": all(
                r[c][m] < 1 - _band(control, c, m)
                for c in r
                if c.startswith("stream")
                for m in ("p50", "p99")
            ),
            **met,
        }
    winners = [name for name, by in wins.items() if all(by.values())]
    if winners:
        text = f"switch: {winners[0]} wins on all four"
    else:
        lost = {n: [k for k, ok in by.items() if not ok] for n, by in wins.items()}
        text = "aiohttp stays: " + "; ".join(
            f"{n} loses on {', '.join(ks)}" for n, ks in lost.items()
        )
    return {"switch_to": winners[0] if winners else None, "wins": wins, "text": text,
            "control_wide": wide, "aiohttp_meets": baseline}  # fmt: skip


# --- the report -----------------------------------------------------------------------------------


def _label(name: str) -> str:
    return "aiohttp (A/A)" if name == CONTROL else name


def format_table(result: dict[str, Any]) -> str:
    clients = list(result["clients"])
    versions = result["versions"]
    ratios = result["ratios"]
    config = result["config"]
    pinned = result["pinned"]
    where = (
        f"client on CPU {pinned['client_cpu']}, upstream on CPU {pinned['upstream_cpu']}"
        if pinned["client_cpu"] is not None
        else "not pinned"
    )
    lines = [
        f"Upstream HTTP clients against a raw fake upstream ({where}; uvloop; median of "
        f"{config['rounds']} rounds; xN = ratio to aiohttp in the same round, median)",
        "",
        "CPU per call (us), client process, all threads",
        f"{'client':<14} {'version':<9} {'unary c1':>15} {'unary c16':>15} "
        f"{'stream c1':>15} {'stream c16':>15}",
    ]

    def with_ratio(name: str, cell: str, key: str, metric: str, spec: str) -> str:
        value = _f(result["clients"][name][cell][key], spec)
        if name == BASELINE:
            return value
        return f"{value} x{_f(ratios[name][cell][metric], '.2f')}"

    for name in clients:
        lines.append(
            f"{_label(name):<14} {versions[name]!s:<9} "
            + " ".join(
                f"{with_ratio(name, _cell_key(*cell), 'cpu_us', 'cpu', '.0f'):>15}"
                for cell in CELLS
            )
        )
    lines += [
        "",
        f"Stream chunk latency, upstream write -> client read (ms; {config['chunks']} chunks "
        f"{config['gap_us'] / 1000:g} ms apart)",
        f"{'client':<14} {'c1 p50':>13} {'c1 p99':>13} {'c16 p50':>13} {'c16 p99':>13} "
        f"{'unary c1 p50':>13} {'unary c16 p99':>14}",
    ]
    for name in clients:
        cells = [
            with_ratio(name, "stream_1", "chunk_p50_ms", "p50", ".3f"),
            with_ratio(name, "stream_1", "chunk_p99_ms", "p99", ".3f"),
            with_ratio(name, "stream_16", "chunk_p50_ms", "p50", ".3f"),
            with_ratio(name, "stream_16", "chunk_p99_ms", "p99", ".3f"),
            with_ratio(name, "unary_1", "p50_ms", "p50", ".3f"),
        ]
        unary16 = with_ratio(name, "unary_16", "p99_ms", "p99", ".2f")
        lines.append(
            f"{_label(name):<14} " + " ".join(f"{c:>13}" for c in cells) + f" {unary16:>14}"
        )
    lines += [
        "",
        "Cancellation mid-stream, and pool reuse (TCP connections the upstream accepted)",
        f"{'client':<14} {'seen':>6} {'close p50 ms':>13} {'close max':>10} {'cleanup ms':>11} "
        f"{'call after':>10}   {'seq':>9} {'conc 16':>9} {'+streams':>9}",
    ]
    for name in clients:
        cancel, pool = result["clients"][name]["cancel"], result["clients"][name]["pool"]
        added = (
            pool["streams_sequential_new_connections"] + pool["streams_concurrent_new_connections"]
        )
        lines.append(
            f"{_label(name):<14} {cancel['seen']:>3}/{cancel['trials']:<2} "
            f"{_f(cancel['closed_p50_ms'], '.2f'):>13} {_f(cancel['closed_max_ms'], '.2f'):>10} "
            f"{_f(cancel['cleanup_p50_ms'], '.2f'):>11} "
            f"{cancel['call_after_ok']:>7}/{cancel['trials']:<2}   "
            f"{pool['sequential_connections']:>4}/{pool['sequential_calls']:<4} "
            f"{pool['concurrent_connections']:>4}/{pool['concurrent_calls']:<4} "
            f"{added:>+9}"
        )
    for name in clients:
        cancel = result["clients"][name]["cancel"]
        if cancel["cleanup_timed_out"] or cancel["closed_only_on_second_cancel"]:
            lines.append(
                f"  {_label(name)}: the cancelled reader's cleanup had not ended after "
                f"{CANCEL_WAIT_S:g} s in {cancel['cleanup_timed_out']}/{cancel['trials']} trials; "
                f"the upstream saw the connection close only once that cleanup was cancelled too "
                f"in {cancel['closed_only_on_second_cancel']}/{cancel['trials']}"
            )
    errors = {
        f"{name} {cell}": by[cell]["first_error"]
        for name, by in result["clients"].items()
        for cell in by
        if cell in {_cell_key(*c) for c in CELLS} and by[cell]["errors"]
    }
    if errors:
        lines.append("")
        lines += [f"ERRORS {where}: {what}" for where, what in errors.items()]
    share = result["neighbours_client_cpu_share"]
    lines.append("")
    if not math.isnan(share):
        lines.append(f"other processes took {share:.1%} of the client CPU during the measurements")
    verdict = result["verdict"]
    if verdict["control_wide"]:
        lines.append("A/A CONTROL WIDE, rerun: " + ", ".join(verdict["control_wide"]))
    if not all(verdict["aiohttp_meets"].values()):
        lines.append(f"aiohttp itself misses: {verdict['aiohttp_meets']}")
    for name, by in verdict["wins"].items():
        lines.append(
            f"{name:<10} wins on: "
            + ", ".join(f"{k} {'yes' if ok else 'no'}" for k, ok in by.items())
        )
    lines.append(f"Verdict: {verdict['text']}")
    if result["not_installed"]:
        lines.append(f"not installed, not measured: {', '.join(result['not_installed'])}")
    if result["empty_figures"]:
        lines.append("EMPTY FIGURES (the measurement came back with nothing): "
                     + ", ".join(result["empty_figures"]))  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http_clients",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (1 round)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 5)")
    parser.add_argument(
        "--clients", nargs="+", choices=(*ADAPTERS, CONTROL), help="clients to measure"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every measurement")
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config()
    if args.rounds:
        config.rounds = args.rounds
    if args.clients:
        config.clients = tuple(dict.fromkeys((BASELINE, *args.clients)))
    config.pin = not args.no_pin
    began = time.perf_counter()
    result = run(config, verbose=args.verbose)
    print(format_table(result))
    print(f"\n(took {time.perf_counter() - began:.0f} s)")
    if args.json:
        from benchmarks.report import write_json

        write_json(args.json, {"http_clients": result})
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
