"""One scenario suite run against every network adapter over real HTTP to the fake upstream:
answers, streams, vendor errors, broken and stalled connections, timeouts, probes, cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from hapaxd.config.provider_types import KIND
from hapaxd.core.errors import UpstreamError
from hapaxd.core.failures import FailureClass
from hapaxd.core.provider import Embedder, Provider, ProviderSpec, Timeouts
from hapaxd.core.types import Chunk, CompletionRequest, FinishReason, Message, Role, Usage
from hapaxd.providers.registry import ADAPTERS, PROVIDER_TYPES, build_provider
from tests.fakes.upstream import Fail, FakeUpstream, Hang, Malformed, Raw, Reply, awkward_pieces


@dataclasses.dataclass(frozen=True)
class Case:
    type: str  # provider type
    vendor: str  # the fake's wire format
    chat: str  # the fake's route for completions
    probe: str  # the fake's route for probe()
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return self.type


OPENAI = Case("openai", "openai", "openai.chat", "openai.models")
ANTHROPIC = Case("anthropic", "anthropic", "anthropic.messages", "anthropic.models")
OLLAMA = Case("ollama", "ollama", "ollama.chat", "ollama.tags")
AZURE = Case("azure_openai", "azure", "azure.chat", "azure.models", {"deployment": "gpt4o-prod"})
NETWORK = [OPENAI, ANTHROPIC, OLLAMA]
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
async def make(fake_upstream: FakeUpstream) -> AsyncIterator[Factory]:
    """Builds adapters pointed at the fake; closes them after the test."""
    built: list[Provider] = []

    def factory(case: Case, timeouts: Timeouts = FAST, **overrides: object) -> Provider:
        fields: dict[str, object] = {
            "name": f"{case.type}-test",
            "type": case.type,
            "base_url": fake_upstream.base_url(case.vendor),
            "api_key": "sk-test",
            "timeouts": timeouts,
            "options": dict(case.options),
        }
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
    sent = fake_upstream.last.json
    assert sent["model"] == "test-model" and sent.get("stream") in (None, False)


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
    assert fake_upstream.last.json["stream"] is True


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
]
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
]


@pytest.mark.parametrize(
    ("case", "fail", "failure"),
    STREAM_ERRORS,
    ids=[f"{c}-{f.status}" for c, f, _ in STREAM_ERRORS],
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


# registry --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROVIDER_TYPES)
async def test_registry_builds_every_type(kind: str) -> None:
    spec = ProviderSpec(name="p", type=kind, base_url="http://127.0.0.1:9")
    provider = build_provider(spec)
    assert isinstance(provider, Provider)
    assert provider.type == kind and provider.name == "p"
    # An adapter embeds exactly when its type's models can by default (Anthropic cannot).
    assert isinstance(provider, Embedder) == ("embeddings" in KIND[kind].capabilities)
    await provider.aclose()


def test_registry_rejects_unknown_types_and_azure_without_url() -> None:
    assert list(ADAPTERS) == list(PROVIDER_TYPES)  # one adapter per declared type, in order
    with pytest.raises(ValueError, match="unknown type 'gemini'"):
        build_provider(ProviderSpec(name="p", type="gemini"))
    with pytest.raises(ValueError, match="base_url"):
        build_provider(ProviderSpec(name="p", type="azure_openai"))
