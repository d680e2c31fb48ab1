"""Vertex AI adapter (type "vertex"): Google's Gemini models on Vertex AI, which speak the Gemini
API's wire (gemini.py: bodies, answers, SSE streams, errors), on Vertex's regional endpoints and
with OAuth2 access tokens of a service account instead of an API key.

    {base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}

base is `https://{location}-aiplatform.googleapis.com` (`https://aiplatform.googleapis.com` for
location "global") unless base_url overrides it (scheme and host, no API version). Embeddings are
`:predict` with `{"instances": [{"content": text}]}`, answered with
`predictions[].embeddings.values` (the form Vertex documents for text-embedding-005 and
gemini-embedding-001). probe() looks up one publisher model
(`GET .../publishers/google/models/{probe_model}`), authenticated, spending no tokens.

Tokens are minted and refreshed by google-auth (never JWT code of ours) from the service-account
key file's JSON that config read (ProviderSpec.credentials), through its requests transport in a
thread. One token serves every call until google-auth deems it near expiry (3m45s before); the
calls that find it stale share one refresh. A refresh that fails for the key's sake (a key
google-auth cannot read, `invalid_grant` from the token endpoint) is a CREDENTIAL failure, one
that fails to reach the token endpoint TRANSIENT. A 401 from Vertex drops the token, so the next
call mints a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import urllib.parse
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
from google.oauth2 import service_account

from hapaxd.core.errors import UpstreamError
from hapaxd.core.failures import FailureClass
from hapaxd.core.provider import ProviderSpec
from hapaxd.core.types import (
    Chunk,
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    Usage,
)
from hapaxd.providers.batches import embed_in_batches
from hapaxd.providers.gemini import GeminiProvider, _raise_in_body
from hapaxd.providers.relay import decode_answer

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
DEFAULT_PROBE_MODEL = "gemini-2.5-flash"
API_VERSION = "v1"


def default_base_url(location: str) -> str:
    """Vertex AI's endpoint for a location: regional, or the global one."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


# The most instances one :predict takes: 250, and 1 for the gemini-embedding models.
PREDICT_BATCH = 250


def instances_per_call(model: str) -> int:
    return 1 if "gemini-embedding" in model else PREDICT_BATCH


def embed_to_wire(request: EmbeddingRequest) -> dict[str, Any]:
    """The `:predict` body of Vertex's embedding models: one instance per input."""
    body: dict[str, Any] = {"instances": [{"content": text} for text in request.inputs]}
    if request.dimensions is not None:
        body["parameters"] = {"outputDimensionality": request.dimensions}
    return body


def embeddings_from_wire(body: Any, model: str = "") -> Embeddings:
    """A `:predict` answer, vectors in input order; its token count is the sum of each
    prediction's `statistics.token_count`. ValueError if it is not one."""
    rows = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        raise ValueError("response has no predictions")
    vectors = []
    tokens = 0
    for row in rows:
        embedding = row.get("embeddings") if isinstance(row, dict) else None
        values = embedding.get("values") if isinstance(embedding, dict) else None
        if not isinstance(values, list):
            raise ValueError("a prediction has no embeddings.values")
        vectors.append(tuple(float(x) for x in values))
        statistics = embedding.get("statistics") if isinstance(embedding, dict) else None
        count = statistics.get("token_count") if isinstance(statistics, dict) else None
        tokens += int(count) if isinstance(count, int | float) else 0
    return Embeddings(
        vectors=tuple(vectors), usage=Usage(prompt_tokens=tokens), upstream_model=model
    )


class _Transport(google.auth.transport.requests.Request):
    """google-auth's requests transport, each exchange with the token endpoint bounded."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> Any:
        call = super().__call__
        return call(url, method, body, headers, timeout=self._timeout, **kwargs)  # type: ignore[no-untyped-call]


class Tokens:
    """The OAuth2 access token of one service account: minted at the first call, kept while
    google-auth deems it valid, refreshed once for all the calls that find it stale."""

    def __init__(self, provider: str, credentials: str, timeout: float) -> None:
        self._provider = provider
        self._info = credentials  # the key file's JSON
        self._timeout = timeout
        self._credentials: service_account.Credentials | None = None
        self._refresh: asyncio.Task[str] | None = None
        self.minted = 0  # refreshes that succeeded (tests and debugging)

    async def token(self) -> str:
        credentials = self._credentials
        if credentials is not None and credentials.valid:
            return str(credentials.token)
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._mint())
            self._refresh.add_done_callback(_retrieved)
        # Shielded: a caller that goes away does not cancel the refresh the others wait for.
        return await asyncio.shield(self._refresh)

    def forget(self) -> None:
        """Vertex refused the token: mint a new one at the next call."""
        if self._credentials is not None:
            self._credentials.token = None

    def _load(self) -> service_account.Credentials:
        if not self._info:
            raise self._failed("no service-account key (options.credentials_file)")
        try:
            info = json.loads(self._info)
            made: service_account.Credentials = (
                service_account.Credentials.from_service_account_info(info, scopes=SCOPES)  # type: ignore[no-untyped-call]
            )
            return made
        except (ValueError, KeyError, TypeError, google.auth.exceptions.GoogleAuthError) as exc:
            # google-auth's message names the field at fault, not the key.
            raise self._failed(f"unusable service-account key: {type(exc).__name__}") from None

    async def _mint(self) -> str:
        if self._credentials is None:
            self._credentials = self._load()
        credentials = self._credentials
        try:
            await asyncio.to_thread(credentials.refresh, _Transport(self._timeout))
        except google.auth.exceptions.RefreshError as exc:
            # invalid_grant and the like: the key's; a token endpoint that keeps failing with a
            # retryable error (google-auth retried it already) is transient.
            failure = FailureClass.TRANSIENT if exc.retryable else FailureClass.CREDENTIAL
            raise UpstreamError(
                failure, self._provider, f"OAuth2 token refresh failed: {_first(exc)}"
            ) from None
        except google.auth.exceptions.TransportError as exc:
            raise UpstreamError(
                FailureClass.TRANSIENT,
                self._provider,
                f"OAuth2 token endpoint unreachable: {_first(exc)}",
            ) from None
        self.minted += 1
        return str(credentials.token)

    def _failed(self, why: str) -> UpstreamError:
        return UpstreamError(FailureClass.CREDENTIAL, self._provider, why)


def _first(exc: Exception) -> str:
    return str(exc.args[0] if exc.args else exc)[:500]


def _retrieved(task: asyncio.Task[str]) -> None:
    """A refresh every caller left: its failure is the next caller's, not an unretrieved one."""
    if not task.cancelled():
        task.exception()


class VertexProvider(GeminiProvider):
    """Gemini models on Vertex AI; options project, location, credentials_file (read into
    spec.credentials by config), probe_model."""

    def __init__(self, spec: ProviderSpec) -> None:
        project, location = spec.options.get("project"), spec.options.get("location")
        if not project or not location:
            raise ValueError(f"provider {spec.name!r}: vertex requires options project, location")
        self._prefix = (
            f"/{API_VERSION}/projects/{urllib.parse.quote(project, safe='')}"
            f"/locations/{urllib.parse.quote(location, safe='')}/publishers/google/models"
        )
        self._probe_model = spec.options.get("probe_model") or DEFAULT_PROBE_MODEL
        if not spec.base_url:
            spec = dataclasses.replace(spec, base_url=default_base_url(location))
        super().__init__(dataclasses.replace(spec, api_key=""))  # no x-goog-api-key header
        self._tokens = Tokens(spec.name, spec.credentials, spec.timeouts.first_byte)

    @property
    def type(self) -> str:
        return "vertex"

    @property
    def tokens(self) -> Tokens:
        return self._tokens

    def _url(self, model: str, method: str) -> str:
        return self._http.url(f"{self._prefix}/{urllib.parse.quote(model, safe='')}:{method}")

    async def _auth(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {await self._tokens.token()}"}

    @contextlib.contextmanager
    def _refused(self) -> Any:
        """A 401 drops the token, so the next call mints a fresh one."""
        try:
            yield
        except UpstreamError as exc:
            if exc.status == 401:
                self._tokens.forget()
            raise

    async def complete(self, request: CompletionRequest) -> Completion:
        with self._refused():
            return await super().complete(request)

    def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        return self._stream(request)

    async def _stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        headers = await self._auth()  # before the request, as the token's failure is the call's
        with self._refused():
            async with contextlib.aclosing(self._relay(request, headers)) as chunks:
                async for chunk in chunks:
                    yield chunk

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        return await embed_in_batches(request, instances_per_call(request.model), self._embed)

    async def _embed(self, request: EmbeddingRequest) -> Embeddings:
        url = self._url(request.model, "predict")
        with self._refused():
            answer = await self._http.post_json(
                url,
                embed_to_wire(request),
                request_id=request.request_id,
                headers=await self._auth(),
            )
        if isinstance(answer, dict) and answer.get("error") and "predictions" not in answer:
            _raise_in_body(self.name, answer, in_stream=False)
        return decode_answer(
            self.name, answer, lambda body: embeddings_from_wire(body, request.model)
        )

    async def probe(self) -> None:
        url = self._http.url(f"{self._prefix}/{urllib.parse.quote(self._probe_model, safe='')}")
        with self._refused():
            await self._http.get_json(url, headers=await self._auth())
