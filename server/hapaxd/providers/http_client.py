"""The one pooled HTTP client every network adapter uses, and the one place transport exceptions
become UpstreamError.

aiohttp was chosen over httpx by measurement (benchmarks/README.md, "Upstream HTTP client").
Adapters never catch aiohttp exceptions themselves: they call `post_json`, `get_json` or
`post_stream` and handle only UpstreamError. Streams go back to the pool like unary calls: see
StreamBody.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from typing import Any

import aiohttp

from hapaxd.config.provider_types import file_secrets
from hapaxd.core.errors import UpstreamError
from hapaxd.core.failures import FailureClass, from_http_status
from hapaxd.core.provider import ProviderSpec
from hapaxd.providers.exchange_timer import ExchangeTimer

# classify(status, body) -> FailureClass, one per vendor
Classifier = Callable[[int, Any], FailureClass]
# error_message(body) -> human text from a vendor error body
ErrorText = Callable[[Any], str]
# retry_delay(body) -> seconds to wait that a vendor error body names (Gemini's RetryInfo), or None
RetryDelay = Callable[[Any], float | None]
# error_body(headers, body) -> the error body classify, error_text and retry_delay read, made from
# the response's headers and decoded body (Bedrock names its error type in x-amzn-ErrorType)
ErrorBody = Callable[[Mapping[str, str], Any], Any]
# A request body: JSON (a mapping aiohttp serialises), or bytes sent as they are (a body that was
# signed, whose exact bytes matter; the caller sets its Content-Type).
Body = Mapping[str, Any] | bytes

NO_HEADERS: Mapping[str, str] = {}

# After a stream's protocol-level end, what is left of its body (the chunked terminator, which
# uvicorn-served upstreams send apart from the last event; a trailing comment) is read off in the
# background so the connection can go back to the pool. At most this much, for at most this long
# (or the provider's idle timeout, if shorter); past either the connection is closed instead.
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0


def default_classify(status: int, body: Any) -> FailureClass:
    """The vendor-neutral mapping (core/failures.py); adapters refine it from their error bodies."""
    return from_http_status(status)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            return max(0.0, float(millis) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value).timestamp()
        return max(0.0, when - (time.time() if now is None else now))
    return None


def _decode_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500]


def _json_error_text(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("type") or error)[:500]
        return str(error)[:500]
    return str(body)[:500]


class StreamBody:
    """A streamed response body. `chunks` yields its bytes as they arrive (the request is sent at
    the first read). The adapter calls `finished()` as soon as the vendor's protocol says the
    answer is complete (`[DONE]`, `message_stop`, `"done": true`), before handing on the last
    chunk: closing `chunks` after that returns the connection to the pool, draining the rest of
    the body in the background if need be. Closed before that (the caller went away, an error),
    the connection is closed at once, so the upstream stops generating too."""

    __slots__ = ("chunks", "complete")

    def __init__(self, chunks: Callable[[StreamBody], AsyncGenerator[bytes, None]]) -> None:
        self.complete = False
        self.chunks = chunks(self)

    def finished(self) -> None:
        self.complete = True


class HttpClient:
    """One aiohttp session per provider (a keep-alive pool), made lazily inside the running loop."""

    def __init__(
        self,
        spec: ProviderSpec,
        classify: Classifier = default_classify,
        error_text: ErrorText = _json_error_text,
        auth_headers: Mapping[str, str] | None = None,
        retry_delay: RetryDelay | None = None,
        error_body: ErrorBody | None = None,
    ) -> None:
        """`auth_headers` (the vendor's key header) go on every request, with spec.headers;
        `retry_delay` reads a wait from an error body that has no Retry-After header;
        `error_body` makes the error body the other hooks read from headers and body."""
        self._spec = spec
        # Longest first, so a whole key is masked before any line of it.
        secrets = [spec.api_key, *file_secrets(spec.type, spec.credentials)]
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._retry_delay = retry_delay
        self._error_body = error_body
        self._headers = {**spec.headers, **(auth_headers or {})}
        self._classify = classify
        self._error_text = error_text
        self._session: aiohttp.ClientSession | None = None
        self._drains: set[asyncio.Task[None]] = set()  # bodies read off after their stream ended
        # aiohttp times only opening a new connection (sock_connect); the rest of the exchange
        # (first_byte, idle, total) has one ExchangeTimer, so a pooled connection's call sets
        # no timer of aiohttp's. Waiting for a free connection of the pool counts against
        # first_byte, like the rest of the wait for the headers.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=spec.timeouts.connect, sock_read=None
        )

    def hide(self, *secrets: str) -> None:
        """More secrets `scrub` masks: those an adapter learns after it was built (Bedrock's AWS
        credentials, which come from the AWS credential chain, not from the spec)."""
        known = set(self._secrets) | {s for s in secrets if s}
        self._secrets = sorted(known, key=len, reverse=True)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._spec.max_connections, ttl_dns_cache=300),
                timeout=self._timeout,
                headers=self._headers,
                json_serialize=json.dumps,
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        """Gives up pending drains (closing their connections), then closes the pool."""
        for task in self._drains:
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    @staticmethod
    def _with_request_id(headers: Mapping[str, str], request_id: str) -> Mapping[str, str]:
        """The caller's request id (CompletionRequest.request_id, which the servicer took from the
        caller's x-request-id metadata or generated) travels upstream as x-request-id."""
        return {**headers, "x-request-id": request_id} if request_id else headers

    def url(self, path: str) -> str:
        return self._spec.base_url.rstrip("/") + path

    async def post_json(
        self,
        url: str,
        body: Body,
        *,
        request_id: str = "",
        headers: Mapping[str, str] = NO_HEADERS,
    ) -> Any:
        with self._mapped(), self._timer() as timer:
            response = await self._send(
                timer, "POST", url, self._with_request_id(headers, request_id), body
            )
            async with response:
                raw = await self._read_whole(timer, response)
                self._raise_for_status(response, raw)
        return self._parse(raw)

    async def get_json(self, url: str, headers: Mapping[str, str] = NO_HEADERS) -> Any:
        with self._mapped(), self._timer() as timer:
            response = await self._send(timer, "GET", url, headers)
            async with response:
                raw = await self._read_whole(timer, response)
                self._raise_for_status(response, raw)
        return self._parse(raw)

    async def _read_whole(self, timer: ExchangeTimer, response: aiohttp.ClientResponse) -> bytes:
        """A whole (unary) body, which follows its headers at once: `idle` bounds all of it."""
        try:
            return await timer.within(self._spec.timeouts.idle, response.read())
        except TimeoutError:
            raise self._timed_out(timer, "") from None

    def _timer(self) -> ExchangeTimer:
        t = self._spec.timeouts
        return ExchangeTimer(t.total, min(t.first_byte, t.idle))

    def _timed_out(self, timer: ExchangeTimer, waiting_for: str) -> UpstreamError:
        """TIMEOUT, saying which of the provider's timeouts cut the exchange."""
        t = self._spec.timeouts
        if timer.past_total:
            message = f"the upstream call took longer than {t.total:g}s (timeouts.total)"
        elif waiting_for:
            message = f"no {waiting_for} within {t.first_byte:g}s"
        else:
            message = f"upstream went silent for {t.idle:g}s"
        return UpstreamError(FailureClass.TIMEOUT, self._spec.name, message)

    def post_stream(
        self,
        url: str,
        body: Body,
        *,
        request_id: str = "",
        headers: Mapping[str, str] = NO_HEADERS,
    ) -> StreamBody:
        """The streamed answer to a POST; see StreamBody for how closing it ends the connection."""
        headers = self._with_request_id(headers, request_id)
        return StreamBody(lambda stream: self._stream(stream, url, body, headers))

    async def _stream(
        self, stream: StreamBody, url: str, body: Body, headers: Mapping[str, str]
    ) -> AsyncGenerator[bytes, None]:
        with self._mapped(), self._timer() as timer:
            response = await self._send(timer, "POST", url, headers, body)
            try:
                if response.status >= 400:
                    raw = b"".join([data async for data in self._read(timer, response)])
                    self._raise_for_status(response, raw)
                async for data in self._read(timer, response):
                    yield data
            finally:
                # Once aiohttp has seen the body's end it has pooled the connection itself.
                if response.content.is_eof():
                    response.release()
                elif stream.complete:
                    self._drain_later(response)
                else:
                    # Not release(): a body cut off mid-answer must not go back to the pool.
                    response.close()

    def _drain_later(self, response: aiohttp.ClientResponse) -> None:
        """Read off the rest of a finished stream's body without holding up its caller."""
        task = asyncio.get_running_loop().create_task(self._drain(response))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self, response: aiohttp.ClientResponse) -> None:
        """Up to DRAIN_BYTES within DRAIN_SECONDS (or idle, if shorter), then the connection goes
        back to the pool; if the body has not ended by then, or reading it fails, it is closed."""
        left = DRAIN_BYTES
        try:
            async with asyncio.timeout(min(self._spec.timeouts.idle, DRAIN_SECONDS)):
                while left >= 0 and not response.content.is_eof():
                    left -= len(await response.content.readany())
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass  # closed below: nothing reaches a caller, whose answer was already complete
        finally:
            if response.content.is_eof():
                response.release()
            else:
                response.close()

    async def _read(
        self, timer: ExchangeTimer, response: aiohttp.ClientResponse
    ) -> AsyncGenerator[bytes, None]:
        """The body as it arrives; TIMEOUT when the upstream is silent for longer than idle (or
        the exchange outlasts total)."""
        idle = self._spec.timeouts.idle
        content = response.content
        while True:
            try:
                data = await timer.within(idle, content.readany())
            except TimeoutError:
                raise self._timed_out(timer, "") from None
            if not data:
                return
            yield data

    def _parse(self, raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise UpstreamError(
                FailureClass.TRANSIENT, self._spec.name, f"malformed JSON from upstream: {exc}"
            ) from None

    def scrub(self, text: str) -> str:
        """Upstream error text with this provider's own key masked (a service account's private
        key too, whole or any line of it): some vendors echo the key they were sent, and error
        text reaches callers, logs and ListProviders."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return text

    def _raise_for_status(self, response: aiohttp.ClientResponse, raw: bytes) -> None:
        if response.status < 400:
            return
        body = _decode_body(raw)
        if self._error_body is not None:
            body = self._error_body(response.headers, body)
        failure = self._classify(response.status, body)
        retry_after = parse_retry_after(response.headers)
        if retry_after is None and self._retry_delay is not None:
            retry_after = self._retry_delay(body)
        raise UpstreamError(
            failure,
            self._spec.name,
            f"HTTP {response.status}: {self.scrub(self._error_text(body))}",
            status=response.status,
            retry_after=retry_after,
        )

    async def _send(
        self,
        timer: ExchangeTimer,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Any = None,
    ) -> aiohttp.ClientResponse:
        """The response, once its headers arrived within first_byte."""
        if isinstance(body, bytes):
            request = self.session.request(method, url, data=body, headers=headers)
        else:
            request = self.session.request(method, url, json=body, headers=headers)
        try:
            return await timer.within(self._spec.timeouts.first_byte, request)
        except aiohttp.ClientError:
            raise  # aiohttp's own timeouts are TimeoutErrors too; _mapped() classifies them
        except TimeoutError:
            raise self._timed_out(timer, "response headers") from None

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        """Every transport exception becomes UpstreamError with its failure class."""
        name = self._spec.name
        try:
            yield
        except UpstreamError:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamError(FailureClass.TIMEOUT, name, f"connect timeout: {exc}") from None
        except aiohttp.SocketTimeoutError as exc:
            raise UpstreamError(
                FailureClass.TIMEOUT, name, f"upstream went silent: {exc}"
            ) from None
        except TimeoutError as exc:
            raise UpstreamError(FailureClass.TIMEOUT, name, f"timed out: {exc}") from None
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamError(FailureClass.TRANSIENT, name, f"body cut short: {exc}") from None
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise UpstreamError(FailureClass.TRANSIENT, name, f"connection failed: {exc}") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(FailureClass.TRANSIENT, name, f"HTTP client error: {exc}") from None
