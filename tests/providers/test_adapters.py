"""One scenario suite run against every network adapter over real HTTP to the fake upstream:
answers, streams, tool calls, vendor errors, broken and stalled connections, timeouts, probes,
cancellation, embeddings; then the wire details each vendor insists on (Gemini's tools, structured
output, images and embeddings bodies among them). The fake refuses any body its vendor's SDK types
refuse (tests/fakes/upstream/shapes.py)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from hapaxd.config.provider_types import KIND
from hapaxd.core.errors import UpstreamError
from hapaxd.core.failures import FailureClass
from hapaxd.core.provider import Embedder, Provider, ProviderSpec, Timeouts
from hapaxd.core.types import (
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    FinishReason,
    FormatType,
    Image,
    Json,
    Message,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolChoice,
    ToolMode,
    Usage,
)
from hapaxd.providers.registry import ADAPTERS, PROVIDER_TYPES, build_provider
from tests.fakes.upstream import (
    Call,
    Fail,
    FakeUpstream,
    Hang,
    Malformed,
    Raw,
    Reply,
    awkward_pieces,
    aws,
)


@dataclasses.dataclass(frozen=True)
class Case:
    type: str  # provider type
    vendor: str  # the fake's wire format
    chat: str  # the fake's route for completions
    probe: str  # the fake's route for probe()
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    embed_model: str = "embed-model"  # an embeddings model the vendor's wire takes

    def __str__(self) -> str:
        return self.type


OPENAI = Case("openai", "openai", "openai.chat", "openai.models")
ANTHROPIC = Case("anthropic", "anthropic", "anthropic.messages", "anthropic.models")
OLLAMA = Case("ollama", "ollama", "ollama.chat", "ollama.tags")
AZURE = Case("azure_openai", "azure", "azure.chat", "azure.models", {"deployment": "gpt4o-prod"})
GEMINI = Case("gemini", "gemini", "gemini.generate", "gemini.models")
VERTEX_OPTIONS = {"project": "test-project", "location": "us-central1"}
VERTEX = Case("vertex", "vertex", "vertex.generate", "vertex.models", VERTEX_OPTIONS)
# Bedrock: Converse on the runtime; probe() is the control plane's ListFoundationModels (the
# fake serves both on one host); embeddings pick Titan's or Cohere's body by the model id.
BEDROCK = Case(
    "bedrock",
    "bedrock",
    "bedrock.converse",
    "bedrock.models",
    {"region": aws.REGION},
    embed_model="cohere.embed-english-v3",
)
NETWORK = [OPENAI, ANTHROPIC, OLLAMA, GEMINI, VERTEX, BEDROCK]
WITH_AZURE = [*NETWORK, AZURE]

REQUEST = CompletionRequest(
    model="test-model",
    messages=(Message(Role.SYSTEM, "Be brief."), Message(Role.USER, "Say hello.")),
    max_tokens=50,
)
TEXT = "Grüße aus der Ferne — 世界, hello 🎉 naïve café!"
FAST = Timeouts(connect=2.0, first_byte=5.0, idle=5.0, total=20.0)

Factory = Callable[..., Provider]


@pytest.fixture
async def make(
    fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Factory]:
    """Builds adapters pointed at the fake; closes them after the test. Bedrock's find the
    fake's AWS credentials in the environment, as botocore's chain reads them."""
    built: list[Provider] = []
    aws.use_environment(monkeypatch)

    def factory(case: Case, timeouts: Timeouts = FAST, **overrides: object) -> Provider:
        fields: dict[str, object] = {
            "name": f"{case.type}-test",
            "type": case.type,
            "base_url": fake_upstream.base_url(case.vendor),
            "api_key": "sk-test",
            "timeouts": timeouts,
            "options": dict(case.options),
        }
        if case.type == "vertex":  # a service account of the fake's own token endpoint
            fields["credentials"] = fake_upstream.service_account()
            fields["api_key"] = ""
        if case.type == "bedrock":  # SigV4 from the AWS chain; the control plane is the fake too
            fields["api_key"] = ""
            fields["options"] = {**case.options, "control_url": fake_upstream.url}
        provider = build_provider(ProviderSpec(**{**fields, **overrides}))  # type: ignore[arg-type]
        built.append(provider)
        return provider

    yield factory
    for provider in built:
        await provider.aclose()


async def collect(provider: Provider, chunks: list[Chunk] | None = None) -> list[Chunk]:
    out = [] if chunks is None else chunks
    async for chunk in provider.stream(REQUEST):
        out.append(chunk)
    return out


async def call(provider: Provider, mode: str) -> object:
    return await provider.complete(REQUEST) if mode == "complete" else await collect(provider)


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.delta for c in chunks)


def assert_well_formed(chunks: list[Chunk], text: str, usage: Usage) -> None:
    """Deltas reassemble into the text; only the last chunk ends the stream and carries usage."""
    assert text_of(chunks) == text
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert chunks[-1].usage == usage


# answers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_complete(case: Case, make: Factory, fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_default(Reply(text=TEXT, prompt_tokens=21, completion_tokens=13))
    completion = await make(case).complete(REQUEST)
    assert completion.text == TEXT
    assert completion.finish_reason is FinishReason.STOP
    assert completion.usage == Usage(21, 13)
    assert completion.upstream_model == "test-model"
    assert fake_upstream.count(case.chat) == 1
    sent = fake_upstream.last
    assert sent.model == "test-model" and not sent.streaming


@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_complete_length_finish(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(finish="length"))
    assert (await make(case).complete(REQUEST)).finish_reason is FinishReason.LENGTH


@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_stream(case: Case, make: Factory, fake_upstream: FakeUpstream) -> None:
    reply = Reply(text=TEXT, chunks=5, prompt_tokens=21, completion_tokens=17)
    fake_upstream.set_default(reply)
    chunks = await collect(make(case))
    assert [c.delta for c in chunks[:-1]] == reply.pieces
    assert_well_formed(chunks, TEXT, Usage(21, 17))
    assert all(c.upstream_model == "test-model" for c in chunks)
    assert fake_upstream.last.streaming


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_stream_split_at_awkward_byte_boundaries(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(text=TEXT, chunks=6, crlf=True, awkward=True))
    assert_well_formed(await collect(make(case)), TEXT, Usage(11, 6))


def test_awkward_pieces_cut_where_it_hurts() -> None:
    data = 'data: {"t":"é🎉"}\r\n\r\n'.encode()
    pieces = awkward_pieces(data)
    assert b"".join(pieces) == data
    assert pieces[0] == b"da"  # inside the field name
    assert any(p.endswith(b"\r") for p in pieces)  # between CR and LF
    assert any(p.startswith(b"\xa9") for p in pieces)  # inside "é" (C3 A9)
    assert sum(1 for p in pieces if p[:1] and p[0] & 0xC0 == 0x80) == 4  # é: 1 cut, 🎉: 3 cuts


async def test_openai_stream_from_raw_pieces(make: Factory, fake_upstream: FakeUpstream) -> None:
    """A hand-cut OpenAI stream: a comment, CR and LF apart, an emoji and `[DONE]` split."""
    fake_upstream.set_default(
        Raw(
            (
                b': OPENROUTER PROCESSING\r\n\r\ndata: {"object":"chat.completion.chunk","model"',
                b':"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"ok \xf0\x9f',
                b'\x8e\x89"},"finish_reason":null}]}\r',
                b'\n\r\ndata: {"object":"chat.completion.chunk","model":"gpt-4o-mini",',
                b'"choices":[{"index":0,',
                b'"delta":{"content":"!"},"finish_reason":"stop"}]}\r\n\r\nda',
                b"ta: [DO",
                b"NE]\r\n\r\n",
            )
        )
    )
    chunks = await collect(make(OPENAI))
    assert text_of(chunks) == "ok 🎉!"
    assert chunks[-1] == Chunk(finish_reason=FinishReason.STOP, upstream_model="gpt-4o-mini")


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_stream_with_comments_and_crlf(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(text=TEXT, chunks=4, comments=True, crlf=True))
    assert_well_formed(await collect(make(case)), TEXT, Usage(11, 4))


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_stream_finish_reason_length(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(finish="length"))
    assert (await collect(make(case)))[-1].finish_reason is FinishReason.LENGTH


# vendor errors ---------------------------------------------------------------------------------

COMMON_ERRORS = [
    (Fail(400), FailureClass.CALLER),
    (Fail(401), FailureClass.CREDENTIAL),
    (Fail(404), FailureClass.MODEL_UNAVAILABLE),
    (Fail(500), FailureClass.TRANSIENT),
    (Fail(503), FailureClass.TRANSIENT),
]
VENDOR_ERRORS = [
    (
        OPENAI,
        Fail(429, kind="insufficient_quota", code="insufficient_quota"),
        FailureClass.CREDENTIAL,
    ),
    (OPENAI, Fail(400, code="context_length_exceeded"), FailureClass.CALLER),
    (AZURE, Fail(429), FailureClass.RATE_LIMITED),
    (AZURE, Fail(401), FailureClass.CREDENTIAL),
    (ANTHROPIC, Fail(529), FailureClass.TRANSIENT),
    (
        ANTHROPIC,
        Fail(400, message="Your credit balance is too low to access the Anthropic API."),
        FailureClass.CREDENTIAL,
    ),
    (ANTHROPIC, Fail(403), FailureClass.CREDENTIAL),
    (GEMINI, Fail(403), FailureClass.CREDENTIAL),
    (GEMINI, Fail(429), FailureClass.RATE_LIMITED),  # a quota with no RetryInfo
    (GEMINI, Fail(504), FailureClass.TIMEOUT),  # DEADLINE_EXCEEDED
    # A bad key is a 400 INVALID_ARGUMENT on the Gemini API; its ErrorInfo reason tells.
    (
        GEMINI,
        Fail(
            400, code="API_KEY_INVALID", message="API key not valid. Please pass a valid API key."
        ),
        FailureClass.CREDENTIAL,
    ),
    (
        GEMINI,
        Fail(400, kind="FAILED_PRECONDITION", message="User location is not supported."),
        FailureClass.CREDENTIAL,
    ),
]
# Bedrock: the type in x-amzn-ErrorType decides where the status alone would not.
VENDOR_ERRORS += [
    (BEDROCK, Fail(403), FailureClass.CREDENTIAL),  # AccessDeniedException
    (BEDROCK, Fail(403, kind="ExpiredTokenException"), FailureClass.CREDENTIAL),
    (BEDROCK, Fail(403, kind="UnrecognizedClientException"), FailureClass.CREDENTIAL),
    (BEDROCK, Fail(400, kind="ServiceQuotaExceededException"), FailureClass.CREDENTIAL),
    (BEDROCK, Fail(429), FailureClass.RATE_LIMITED),  # ThrottlingException
    (BEDROCK, Fail(429, kind="ModelNotReadyException"), FailureClass.TRANSIENT),
    (BEDROCK, Fail(408), FailureClass.TIMEOUT),  # ModelTimeoutException
    (BEDROCK, Fail(424), FailureClass.TRANSIENT),  # ModelErrorException
    (BEDROCK, Fail(404), FailureClass.MODEL_UNAVAILABLE),  # ResourceNotFoundException
    (BEDROCK, Fail(400), FailureClass.CALLER),  # ValidationException
    (BEDROCK, Fail(500), FailureClass.TRANSIENT),  # InternalServerException
    (BEDROCK, Fail(503), FailureClass.TRANSIENT),  # ServiceUnavailableException
]
# Vertex AI answers errors as the Gemini API does.
VENDOR_ERRORS += [(VERTEX, f, k) for c, f, k in VENDOR_ERRORS if c is GEMINI]
ERROR_CASES = [(c, f, k) for c in NETWORK for f, k in COMMON_ERRORS] + VENDOR_ERRORS


@pytest.mark.parametrize("mode", ["complete", "stream"])
@pytest.mark.parametrize(
    ("case", "fail", "failure"),
    ERROR_CASES,
    ids=[f"{c}-{f.status}-{f.kind or f.code or ''}" for c, f, _ in ERROR_CASES],
)
async def test_vendor_error_bodies(
    case: Case,
    fail: Fail,
    failure: FailureClass,
    mode: str,
    make: Factory,
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.set_default(fail)
    with pytest.raises(UpstreamError) as caught:
        await call(make(case), mode)
    assert caught.value.failure_class is failure
    assert caught.value.status == fail.status
    assert caught.value.provider == f"{case.type}-test"


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_error_message_is_the_vendors(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Fail(400, message="messages.0.content: must not be empty"))
    with pytest.raises(UpstreamError) as caught:
        await make(case).complete(REQUEST)
    assert "HTTP 400" in caught.value.message
    assert "messages.0.content: must not be empty" in caught.value.message


@pytest.mark.parametrize("mode", ["complete", "stream"])
@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_rate_limited_with_retry_after(
    case: Case, mode: str, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Fail(429, retry_after="7"))
    with pytest.raises(UpstreamError) as caught:
        await call(make(case), mode)
    assert caught.value.failure_class is FailureClass.RATE_LIMITED
    assert caught.value.retry_after == 7.0


# broken streams --------------------------------------------------------------------------------


async def stream_until_error(provider: Provider) -> tuple[list[Chunk], UpstreamError]:
    chunks: list[Chunk] = []
    with pytest.raises(UpstreamError) as caught:
        await collect(provider, chunks)
    return chunks, caught.value


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_connection_dropped_mid_stream(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    reply = Reply(text=TEXT, chunks=4, drop_after=2)
    fake_upstream.set_default(reply)
    chunks, error = await stream_until_error(make(case))
    assert [c.delta for c in chunks] == reply.pieces[:2]
    assert error.failure_class is FailureClass.TRANSIENT


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_stream_ending_without_its_closing_events(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    reply = Reply(chunks=3, end_early=True)
    fake_upstream.set_default(reply)
    chunks, error = await stream_until_error(make(case))
    assert [c.delta for c in chunks] == reply.pieces
    assert error.failure_class is FailureClass.TRANSIENT
    assert "ended early, after 3 chunks" in error.message


async def test_openai_stream_with_finish_but_no_done_marker_is_complete(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(text=TEXT, done_marker=False))
    assert_well_formed(await collect(make(OPENAI)), TEXT, Usage(11, 3))


@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_malformed_json_body(case: Case, make: Factory, fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_default(Malformed())
    with pytest.raises(UpstreamError) as caught:
        await make(case).complete(REQUEST)
    assert caught.value.failure_class is FailureClass.TRANSIENT


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_malformed_json_in_stream(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    reply = Reply()
    fake_upstream.set_default(Malformed(after=1))
    chunks, error = await stream_until_error(make(case))
    assert [c.delta for c in chunks] == reply.pieces[:1]
    assert error.failure_class is FailureClass.TRANSIENT
    assert "malformed" in error.message


STREAM_ERRORS = [
    (OPENAI, Fail(500), FailureClass.TRANSIENT),
    (OPENAI, Fail(429), FailureClass.RATE_LIMITED),
    (ANTHROPIC, Fail(529), FailureClass.TRANSIENT),
    (ANTHROPIC, Fail(500), FailureClass.TRANSIENT),
    (ANTHROPIC, Fail(429), FailureClass.RATE_LIMITED),
    (OLLAMA, Fail(500), FailureClass.TRANSIENT),
    (GEMINI, Fail(500), FailureClass.TRANSIENT),
    (GEMINI, Fail(503), FailureClass.TRANSIENT),
    (GEMINI, Fail(429), FailureClass.RATE_LIMITED),
    (GEMINI, Fail(400), FailureClass.CALLER),
]
STREAM_ERRORS += [(VERTEX, f, k) for c, f, k in STREAM_ERRORS if c is GEMINI]
# Bedrock: exception messages in the event stream, by their :exception-type.
STREAM_ERRORS += [
    (BEDROCK, Fail(500), FailureClass.TRANSIENT),  # internalServerException
    (BEDROCK, Fail(424, kind="ModelStreamErrorException"), FailureClass.TRANSIENT),
    (BEDROCK, Fail(429), FailureClass.RATE_LIMITED),  # throttlingException
    (BEDROCK, Fail(400), FailureClass.CALLER),  # validationException
    (BEDROCK, Fail(503), FailureClass.TRANSIENT),  # serviceUnavailableException
    (BEDROCK, Fail(408), FailureClass.TIMEOUT),  # modelTimeoutException
]


@pytest.mark.parametrize(
    ("case", "fail", "failure"),
    STREAM_ERRORS,
    ids=[f"{c}-{f.status}-{f.kind or ''}" for c, f, _ in STREAM_ERRORS],
)
async def test_error_event_mid_stream(
    case: Case, fail: Fail, failure: FailureClass, make: Factory, fake_upstream: FakeUpstream
) -> None:
    reply = Reply(chunks=3, error_after=1, error=dataclasses.replace(fail, message="went wrong"))
    fake_upstream.set_default(reply)
    chunks, error = await stream_until_error(make(case))
    assert [c.delta for c in chunks] == reply.pieces[:1]
    assert error.failure_class is failure
    assert "went wrong" in error.message


# tool calls ------------------------------------------------------------------------------------

WEATHER = Json({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TOOLS = CompletionRequest(
    model="test-model",
    messages=(Message(Role.USER, "Weather in Oslo, and the time?"),),
    max_tokens=50,
    tools=(Tool("get_weather", "The weather in a city", WEATHER), Tool("get_time")),
)
TWO_CALLS = Reply(
    text="",
    tool_calls=(Call(), Call("call_fake_2", "get_time", "{}")),
    finish="tool_calls",
)


def calls_of(chunks: list[Chunk]) -> list[tuple[str, str, str]]:
    """(id, name, arguments) of each streamed tool call, its deltas joined by index."""
    parts: dict[int, list[str]] = {}
    for chunk in chunks:
        for delta in chunk.tool_calls:
            got = parts.setdefault(delta.index, ["", "", ""])
            got[0] += delta.id
            got[1] += delta.name
            got[2] += delta.arguments
    return [(p[0], p[1], p[2]) for _, p in sorted(parts.items())]


@pytest.mark.parametrize("mode", ["complete", "stream"])
@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_tool_calls_come_back_with_distinct_ids_names_and_arguments(
    case: Case, mode: str, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(TWO_CALLS)
    provider = make(case)
    if mode == "complete":
        completion = await provider.complete(TOOLS)
        calls = [(c.id, c.name, c.arguments) for c in completion.tool_calls]
        finish = completion.finish_reason
    else:
        chunks = [c async for c in provider.stream(TOOLS)]
        calls, finish = calls_of(chunks), chunks[-1].finish_reason
    assert [name for _, name, _ in calls] == ["get_weather", "get_time"]
    assert [json.loads(arguments) for _, _, arguments in calls] == [{"city": "Oslo"}, {}]
    assert all(calls) and len({call_id for call_id, _, _ in calls}) == 2
    assert finish is FinishReason.TOOL_CALLS


# embeddings ------------------------------------------------------------------------------------

EMBEDDERS = [c for c in NETWORK if "embeddings" in KIND[c.type].capabilities]


@pytest.mark.parametrize("case", EMBEDDERS, ids=str)
async def test_embeddings_one_vector_per_input_in_order(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make(case)
    assert isinstance(provider, Embedder)
    answer = await provider.embed(
        EmbeddingRequest(case.embed_model, ("a", "bbb", "cc"), dimensions=4)
    )
    # fake_vector: each input's length and index, then 0.25s
    assert answer.vectors == (
        (1.0, 0.0, 0.25, 0.25),
        (3.0, 1.0, 0.25, 0.25),
        (2.0, 2.0, 0.25, 0.25),
    )
    assert fake_upstream.last.model == case.embed_model


# Embedding models that take fewer texts a call than the gateway accepts (up to 2048): what the
# vendor says one call takes (the fake refuses more, as the vendor does).
BATCHED = [
    pytest.param(GEMINI, "text-embedding-004", 100, id="gemini"),
    pytest.param(VERTEX, "text-embedding-005", 250, id="vertex"),
    pytest.param(VERTEX, "gemini-embedding-001", 1, id="vertex-gemini-embedding"),
    pytest.param(BEDROCK, "cohere.embed-english-v3", 96, id="bedrock-cohere"),
    pytest.param(BEDROCK, "amazon.titan-embed-text-v2:0", 1, id="bedrock-titan"),
]


def _texts(count: int) -> tuple[str, ...]:
    return tuple("x" * (i % 7) + str(i) for i in range(count))  # lengths that vary


@pytest.mark.parametrize(("case", "model", "per_call"), BATCHED)
async def test_a_batch_bigger_than_one_call_takes_goes_in_several_calls_in_order(
    case: Case, model: str, per_call: int, make: Factory, fake_upstream: FakeUpstream
) -> None:
    texts = _texts(per_call * 2 + 3 if per_call > 1 else 5)
    provider = make(case)
    assert isinstance(provider, Embedder)
    answer = await provider.embed(EmbeddingRequest(model, texts))
    assert not fake_upstream.shape_errors
    calls = fake_upstream.requests_to(f"{case.vendor}.embed")
    assert len(calls) == -(-len(texts) // per_call)
    # fake_vector: each input's length and its index within its call, then 0.25
    assert answer.vectors == tuple(
        (float(len(text)), float(i % per_call), 0.25) for i, text in enumerate(texts)
    )
    assert answer.upstream_model == model


@pytest.mark.parametrize(("case", "model", "per_call"), BATCHED)
async def test_one_failed_call_of_a_batch_fails_it_and_hangs_up_the_others(
    case: Case, model: str, per_call: int, make: Factory, fake_upstream: FakeUpstream
) -> None:
    route = f"{case.vendor}.embed"
    fake_upstream.script(route, Fail(429))
    fake_upstream.set_default(Hang(), route)
    provider = make(case)
    assert isinstance(provider, Embedder)
    texts = _texts(per_call * 2 + 1)  # three calls
    with pytest.raises(UpstreamError) as caught:
        await provider.embed(EmbeddingRequest(model, texts))
    assert caught.value.failure_class is FailureClass.RATE_LIMITED
    await fake_upstream.wait_for_disconnects(2)  # the other calls were cancelled, not left


@pytest.mark.parametrize(
    ("fail", "failure"),
    [(Fail(429), FailureClass.RATE_LIMITED), (Fail(401), FailureClass.CREDENTIAL)],
)
@pytest.mark.parametrize("case", EMBEDDERS, ids=str)
async def test_embedding_errors(
    case: Case, fail: Fail, failure: FailureClass, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(fail)
    provider = make(case)
    assert isinstance(provider, Embedder)
    with pytest.raises(UpstreamError) as caught:
        await provider.embed(EmbeddingRequest(case.embed_model, ("a",)))
    assert caught.value.failure_class is failure


# timeouts and refused connections --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["complete", "stream"])
@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_no_headers_within_first_byte_timeout(
    case: Case, mode: str, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Hang())
    provider = make(case, Timeouts(connect=2, first_byte=0.2, idle=5, total=20))
    with pytest.raises(UpstreamError) as caught:
        await call(provider, mode)
    assert caught.value.failure_class is FailureClass.TIMEOUT
    await fake_upstream.wait_for_disconnects(1)  # the gateway hung up on the upstream


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_headers_after_a_delay_within_first_byte_timeout(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Hang(seconds=0.3, then=Reply(text=TEXT)))
    provider = make(case, Timeouts(connect=2, first_byte=3, idle=3, total=20))
    assert (await provider.complete(REQUEST)).text == TEXT


async def test_slow_headers_are_bounded_by_first_byte_not_idle(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Hang(seconds=0.5, then=Reply(text=TEXT)))
    provider = make(OPENAI, Timeouts(connect=2, first_byte=3, idle=0.2, total=20))
    assert (await provider.complete(REQUEST)).text == TEXT


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_silence_mid_stream_beyond_idle_timeout(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    reply = Reply(chunks=3, stall_after=1)
    fake_upstream.set_default(reply)
    provider = make(case, Timeouts(connect=2, first_byte=5, idle=0.3, total=20))
    chunks, error = await stream_until_error(provider)
    assert [c.delta for c in chunks] == reply.pieces[:1]
    assert error.failure_class is FailureClass.TIMEOUT
    await fake_upstream.wait_for_disconnects(1)


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_slow_stream_within_idle_timeout_completes(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(text=TEXT, chunks=4, chunk_delay=0.1))
    provider = make(case, Timeouts(connect=2, first_byte=5, idle=1, total=20))
    assert_well_formed(await collect(provider), TEXT, Usage(11, 4))


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_a_stream_longer_than_total_is_cut(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    """Each chunk comes well within idle, but the whole stream outlasts timeouts.total."""
    reply = Reply(text="one two three four five six seven eight", chunks=8, chunk_delay=0.1)
    fake_upstream.set_default(reply)
    provider = make(case, Timeouts(connect=2, first_byte=5, idle=1, total=0.35))
    chunks, error = await stream_until_error(provider)
    assert 1 <= len(chunks) < 8
    assert error.failure_class is FailureClass.TIMEOUT
    assert "timeouts.total" in error.message
    await fake_upstream.wait_for_disconnects(1)


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_headers_later_than_total_are_cut_by_total(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Hang(seconds=0.6, then=Reply(text=TEXT)))
    provider = make(case, Timeouts(connect=2, first_byte=5, idle=5, total=0.2))
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(REQUEST)
    assert caught.value.failure_class is FailureClass.TIMEOUT
    assert "timeouts.total" in caught.value.message


@pytest.mark.parametrize("mode", ["complete", "stream", "probe"])
@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_connection_refused_then_back(
    case: Case, mode: str, make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make(case)
    await provider.probe()  # a pooled keep-alive connection exists before the upstream goes
    await fake_upstream.refuse_connections()
    with pytest.raises(UpstreamError) as caught:
        await (provider.probe() if mode == "probe" else call(provider, mode))
    assert caught.value.failure_class is FailureClass.TRANSIENT
    await fake_upstream.accept_connections()
    await provider.probe()
    assert (await provider.complete(REQUEST)).text == Reply().text


# probe -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_probe_ok_spends_no_tokens(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    await make(case).probe()
    assert [r.route for r in fake_upstream.requests] == [case.probe]
    assert fake_upstream.last.method == "GET"


@pytest.mark.parametrize(
    ("fail", "failure"),
    [(Fail(401), FailureClass.CREDENTIAL), (Fail(500), FailureClass.TRANSIENT)],
)
@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_probe_failing(
    case: Case, fail: Fail, failure: FailureClass, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(case.probe, fail)
    provider = make(case)
    with pytest.raises(UpstreamError) as caught:
        await provider.probe()
    assert caught.value.failure_class is failure
    await provider.probe()  # the script is used up: the next probe passes


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_probe_against_a_down_upstream(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make(case)
    fake_upstream.set_down()
    with pytest.raises(UpstreamError) as caught:
        await provider.probe()
    assert caught.value.status == 503
    assert caught.value.failure_class is FailureClass.TRANSIENT
    fake_upstream.set_up()
    await provider.probe()


async def test_probe_timeout(make: Factory, fake_upstream: FakeUpstream) -> None:
    fake_upstream.script("openai.models", Hang())
    provider = make(OPENAI, Timeouts(connect=2, first_byte=0.2, idle=5, total=20))
    with pytest.raises(UpstreamError) as caught:
        await provider.probe()
    assert caught.value.failure_class is FailureClass.TIMEOUT


# cancellation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_cancelling_a_stream_consumer_closes_the_upstream(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(chunks=4, stall_after=2))
    first = asyncio.Event()
    chunks: list[Chunk] = []

    async def consume() -> None:
        async for chunk in make(case).stream(REQUEST):
            chunks.append(chunk)
            first.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_upstream.wait_for_disconnects(1)
    assert fake_upstream.last.disconnected
    assert chunks


@pytest.mark.parametrize("case", NETWORK, ids=str)
async def test_closing_a_stream_early_closes_the_upstream(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(chunks=4, stall_after=2))
    stream = make(case).stream(REQUEST)
    first = await anext(stream)
    assert first.delta
    await stream.aclose()
    await fake_upstream.wait_for_disconnects(1)


@pytest.mark.parametrize("case", WITH_AZURE, ids=str)
async def test_cancelling_complete_closes_the_upstream(
    case: Case, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Hang())
    task = asyncio.create_task(make(case).complete(REQUEST))
    await fake_upstream.wait_for_requests(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_upstream.wait_for_disconnects(1)


async def test_finished_requests_are_not_disconnects(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make(OPENAI)
    await provider.complete(REQUEST)
    await collect(provider)
    await provider.aclose()
    assert fake_upstream.disconnects == 0
    assert not any(r.disconnected for r in fake_upstream.requests)


# wire details each vendor insists on -----------------------------------------------------------


async def test_openai_headers_and_body(make: Factory, fake_upstream: FakeUpstream) -> None:
    provider = make(OPENAI, headers={"OpenAI-Organization": "org-test"})
    await provider.complete(dataclasses.replace(REQUEST, stop=("END",), user="u1"))
    sent = fake_upstream.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["openai-organization"] == "org-test"
    assert sent.json["stop"] == ["END"] and sent.json["user"] == "u1"
    assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_openai_without_key_sends_no_authorization(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    await make(OPENAI, api_key="").complete(REQUEST)
    assert "authorization" not in fake_upstream.last.headers


async def test_azure_deployment_path_version_and_key(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    await make(AZURE).complete(REQUEST)
    sent = fake_upstream.last
    assert sent.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == "sk-test"
    assert "authorization" not in sent.headers


async def test_azure_deployment_defaults_to_the_model(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make(dataclasses.replace(AZURE, options={"api_version": "2025-01-01-preview"}))
    await collect(provider)
    await provider.probe()
    chat, models = fake_upstream.requests
    assert chat.path == "/openai/deployments/test-model/chat/completions"
    assert chat.query == models.query == {"api-version": "2025-01-01-preview"}
    assert models.path == "/openai/models"


async def test_anthropic_headers_and_body(make: Factory, fake_upstream: FakeUpstream) -> None:
    case = dataclasses.replace(
        ANTHROPIC, options={"anthropic_version": "2024-01-01", "default_max_tokens": "333"}
    )
    await make(case).complete(dataclasses.replace(REQUEST, max_tokens=None))
    sent = fake_upstream.last
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-test"
    assert sent.headers["anthropic-version"] == "2024-01-01"
    assert sent.json["max_tokens"] == 333
    assert sent.json["system"] == "Be brief."
    assert sent.json["messages"] == [{"role": "user", "content": "Say hello."}]


async def test_ollama_body(make: Factory, fake_upstream: FakeUpstream) -> None:
    await make(OLLAMA).complete(REQUEST)
    sent = fake_upstream.last
    assert sent.path == "/api/chat"
    assert sent.json["stream"] is False
    assert sent.json["options"] == {"num_predict": 50}


async def test_gemini_paths_key_header_and_body(make: Factory, fake_upstream: FakeUpstream) -> None:
    provider = make(GEMINI)
    await provider.complete(dataclasses.replace(REQUEST, stop=("END",), temperature=0.0, seed=7))
    await collect(provider)
    await provider.probe()
    chat, stream, models = fake_upstream.requests
    assert chat.path == "/v1beta/models/test-model:generateContent" and chat.query == {}
    assert stream.path == "/v1beta/models/test-model:streamGenerateContent"
    assert stream.query == {"alt": "sse"}
    assert models.method == "GET" and models.path == "/v1beta/models"
    for sent in (chat, stream, models):  # the key in a header, never in the URL
        assert sent.headers["x-goog-api-key"] == "sk-test"
        assert "key" not in sent.query and "authorization" not in sent.headers
    assert chat.json == {
        "contents": [{"role": "user", "parts": [{"text": "Say hello."}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "maxOutputTokens": 50,
            "temperature": 0.0,
            "stopSequences": ["END"],
            "seed": 7,
        },
    }
    assert stream.json == {**chat.json, "generationConfig": {"maxOutputTokens": 50}}


async def test_gemini_without_key_sends_no_key_header(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    await make(GEMINI, api_key="").complete(REQUEST)
    assert "x-goog-api-key" not in fake_upstream.last.headers


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_gemini_tools_tool_choice_and_made_up_call_ids(
    mode: str, make: Factory, fake_upstream: FakeUpstream
) -> None:
    """Gemini's function calls have no ids: each gets call_<n>_<name>."""
    fake_upstream.set_default(TWO_CALLS)
    request = dataclasses.replace(TOOLS, tool_choice=ToolChoice(ToolMode.FUNCTION, "get_weather"))
    provider = make(GEMINI)
    if mode == "complete":
        calls = [(c.id, c.name) for c in (await provider.complete(request)).tool_calls]
    else:
        calls = [(i, n) for i, n, _ in calls_of([c async for c in provider.stream(request)])]
    assert calls == [("call_0_get_weather", "get_weather"), ("call_1_get_time", "get_time")]
    sent = fake_upstream.last.json
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "parametersJsonSchema": WEATHER.value,
                },
                {"name": "get_time"},
            ]
        }
    ]
    assert sent["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


@pytest.mark.parametrize(
    ("mode", "wire"), [(ToolMode.AUTO, "AUTO"), (ToolMode.NONE, "NONE"), (ToolMode.REQUIRED, "ANY")]
)
async def test_gemini_tool_modes(
    mode: ToolMode, wire: str, make: Factory, fake_upstream: FakeUpstream
) -> None:
    await make(GEMINI).complete(dataclasses.replace(TOOLS, tool_choice=ToolChoice(mode)))
    assert fake_upstream.last.json["toolConfig"] == {"functionCallingConfig": {"mode": wire}}


async def test_gemini_tool_results_go_back_as_function_responses(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    calls = (
        ToolCall("call_0_get_weather", "get_weather", '{"city": "Oslo"}'),
        ToolCall("call_1_get_time", "get_time", ""),
    )
    request = dataclasses.replace(
        TOOLS,
        messages=(
            *TOOLS.messages,
            Message(Role.ASSISTANT, "", tool_calls=calls),
            Message(Role.TOOL, "-3C", tool_call_id="call_0_get_weather"),
            Message(Role.TOOL, '{"time": "12:00"}', tool_call_id="call_1_get_time"),
            Message(Role.USER, "Thanks"),
        ),
    )
    await make(GEMINI).complete(request)
    assert fake_upstream.last.json["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Oslo, and the time?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                    "thoughtSignature": "skip_thought_signature_validator",
                },
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"output": "-3C"}}},
                {"functionResponse": {"name": "get_time", "response": {"time": "12:00"}}},
            ],
        },
        {"role": "user", "parts": [{"text": "Thanks"}]},
    ]


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_gemini_structured_output(
    mode: str, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(text='{"city": "Oslo"}', chunks=2))
    answer = ResponseFormat(FormatType.JSON_SCHEMA, name="place", schema=WEATHER)
    request = dataclasses.replace(REQUEST, response_format=answer)
    provider = make(GEMINI)
    if mode == "complete":
        text = (await provider.complete(request)).text
    else:
        text = text_of(await anext_all(provider, request))
    assert json.loads(text) == {"city": "Oslo"}
    assert fake_upstream.last.json["generationConfig"] == {
        "maxOutputTokens": 50,
        "responseMimeType": "application/json",
        "responseJsonSchema": WEATHER.value,
    }
    await provider.complete(
        dataclasses.replace(REQUEST, response_format=ResponseFormat(FormatType.JSON_OBJECT))
    )
    assert fake_upstream.last.json["generationConfig"] == {
        "maxOutputTokens": 50,
        "responseMimeType": "application/json",
    }


async def anext_all(provider: Provider, request: CompletionRequest) -> list[Chunk]:
    return [c async for c in provider.stream(request)]


async def test_gemini_images_inline_and_by_uri(make: Factory, fake_upstream: FakeUpstream) -> None:
    png = b"\x89PNG\r\n\x1a\n fake"
    parts = (
        "What are these?",
        Image(data=png, mime_type="image/png"),
        Image(url="https://example.com/cat.jpeg"),
    )
    request = dataclasses.replace(
        REQUEST, messages=(Message(Role.USER, "What are these?", parts=parts),)
    )
    await make(GEMINI).complete(request)
    assert fake_upstream.last.json["contents"][0]["parts"] == [
        {"text": "What are these?"},
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}},
        {"fileData": {"fileUri": "https://example.com/cat.jpeg", "mimeType": "image/jpeg"}},
    ]


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_gemini_thoughts_and_token_counts(
    mode: str, make: Factory, fake_upstream: FakeUpstream
) -> None:
    """Thought parts are reasoning; thoughtsTokenCount is output too, cachedContentTokenCount
    part of the prompt."""
    reply = Reply(
        text="Cold.", reasoning="Winter.", cached_tokens=3, reasoning_tokens=2, completion_tokens=5
    )
    fake_upstream.set_default(reply)
    provider = make(GEMINI)
    if mode == "complete":
        completion = await provider.complete(REQUEST)
        text, reasoning, usage = completion.text, completion.reasoning, completion.usage
    else:
        chunks = await collect(provider)
        text, usage = text_of(chunks), chunks[-1].usage
        reasoning = "".join(c.reasoning for c in chunks)
    assert (text, reasoning) == ("Cold.", "Winter.")
    assert usage == Usage(11, 5, cached_prompt_tokens=3, reasoning_tokens=2)


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_gemini_safety_finish_is_content_filter(
    mode: str, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(finish="content_filter"))
    provider = make(GEMINI)
    if mode == "complete":
        finish = (await provider.complete(REQUEST)).finish_reason
    else:
        finish = (await collect(provider))[-1].finish_reason
    assert finish is FinishReason.CONTENT_FILTER


BLOCKED = {
    "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
    "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
    "modelVersion": "gemini-2.5-flash",
}


async def test_gemini_blocked_prompt_is_content_filter(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    body = json.dumps(BLOCKED).encode()
    fake_upstream.script("gemini.generate", Raw((body,), content_type="application/json"))
    fake_upstream.script("gemini.generate", Raw((b"data: " + body + b"\n\n",)))
    provider = make(GEMINI)
    completion = await provider.complete(REQUEST)
    assert completion.finish_reason is FinishReason.CONTENT_FILTER and completion.text == ""
    assert completion.usage == Usage(9, 0)
    chunks = await collect(provider)
    assert chunks == [
        Chunk(
            finish_reason=FinishReason.CONTENT_FILTER,
            usage=Usage(9, 0),
            upstream_model="gemini-2.5-flash",
        )
    ]


MALFORMED_CALL = {
    "candidates": [
        {"content": {}, "finishReason": "MALFORMED_FUNCTION_CALL", "index": 0},
    ],
    "modelVersion": "gemini-2.5-flash",
}


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_gemini_malformed_function_call_is_a_transient_error(
    mode: str, make: Factory, fake_upstream: FakeUpstream
) -> None:
    body = json.dumps(MALFORMED_CALL).encode()
    if mode == "complete":
        fake_upstream.set_default(Raw((body,), content_type="application/json"))
    else:
        fake_upstream.set_default(Raw((b"data: " + body + b"\n\n",)))
    with pytest.raises(UpstreamError) as caught:
        await call(make(GEMINI), mode)
    assert caught.value.failure_class is FailureClass.TRANSIENT
    assert "MALFORMED_FUNCTION_CALL" in caught.value.message


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_gemini_retry_after_header_when_there_is_no_retry_info(
    mode: str, make: Factory, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Fail(429, headers={"Retry-After": "3"}))
    with pytest.raises(UpstreamError) as caught:
        await call(make(GEMINI), mode)
    assert caught.value.failure_class is FailureClass.RATE_LIMITED
    assert caught.value.retry_after == 3.0


async def test_gemini_error_object_in_a_200_answer(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    fake_upstream.set_default(Raw((json.dumps(error).encode(),), content_type="application/json"))
    with pytest.raises(UpstreamError) as caught:
        await make(GEMINI).complete(REQUEST)
    assert caught.value.failure_class is FailureClass.TRANSIENT
    assert "The model is overloaded. (UNAVAILABLE)" in caught.value.message


async def test_gemini_bare_json_error_inside_a_stream(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    """An error the API writes into a 200 stream as plain JSON lines, not as a `data:` event."""
    first = {
        "candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}, "index": 0}],
        "modelVersion": "gemini-2.5-flash",
    }
    error = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}],
        }
    }
    bare = json.dumps(error, indent=2).encode()
    fake_upstream.set_default(
        Raw((b"data: " + json.dumps(first).encode() + b"\r\n\r\n", bare[:40], bare[40:]))
    )
    chunks, error_seen = await stream_until_error(make(GEMINI))
    assert text_of(chunks) == "Hel"
    assert error_seen.failure_class is FailureClass.RATE_LIMITED
    assert error_seen.retry_after == 2.0
    assert "error in stream: Resource has been exhausted" in error_seen.message


async def test_gemini_vendor_options_and_generation_settings(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    """generationConfig fields given as vendor options go into it; the rest go top level."""
    options = {
        "thinkingConfig": {"thinkingBudget": 0, "includeThoughts": False},
        "topK": 40,
        "safetySettings": [
            {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}
        ],
    }
    request = dataclasses.replace(
        REQUEST,
        top_p=0.9,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        vendor_options=(("gemini", Json(options)), ("openai", Json({"reasoning_effort": "low"}))),
    )
    await make(GEMINI).complete(request)
    sent = fake_upstream.last.json
    assert sent["safetySettings"] == options["safetySettings"]
    assert sent["generationConfig"] == {
        "maxOutputTokens": 50,
        "topP": 0.9,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "thinkingConfig": {"thinkingBudget": 0, "includeThoughts": False},
        "topK": 40,
    }
    assert "reasoning_effort" not in sent


async def test_gemini_embeddings_body(make: Factory, fake_upstream: FakeUpstream) -> None:
    provider = make(GEMINI)
    assert isinstance(provider, Embedder)
    answer = await provider.embed(EmbeddingRequest("text-embedding-004", ("a", "bb"), dimensions=5))
    sent = fake_upstream.last
    assert sent.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert sent.headers["x-goog-api-key"] == "sk-test"
    assert sent.json == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": text}]},
                "outputDimensionality": 5,
            }
            for text in ("a", "bb")
        ]
    }
    assert len(answer.vectors) == 2 and answer.upstream_model == "text-embedding-004"


# registry --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROVIDER_TYPES)
async def test_registry_builds_every_type(kind: str) -> None:
    options = {"vertex": VERTEX_OPTIONS, "bedrock": {"region": aws.REGION}}.get(kind, {})
    spec = ProviderSpec(name="p", type=kind, base_url="http://127.0.0.1:9", options=options)
    provider = build_provider(spec)
    assert isinstance(provider, Provider)
    assert provider.type == kind and provider.name == "p"
    # An adapter embeds exactly when its type's models can by default (Anthropic cannot).
    assert isinstance(provider, Embedder) == ("embeddings" in KIND[kind].capabilities)
    await provider.aclose()


def test_registry_rejects_unknown_types_and_azure_without_url() -> None:
    assert list(ADAPTERS) == list(PROVIDER_TYPES)  # one adapter per declared type, in order
    with pytest.raises(ValueError, match="unknown type 'sagemaker'"):
        build_provider(ProviderSpec(name="p", type="sagemaker"))
    with pytest.raises(ValueError, match="base_url"):
        build_provider(ProviderSpec(name="p", type="azure_openai"))
