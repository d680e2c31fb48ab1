"""AWS Bedrock beyond the scenario suite (tests/providers/test_adapters.py runs every scenario for
it too): the SigV4 signature the fake checks with botocore, session tokens, credentials from the
AWS chain (and none found), the event-stream framing with a bad CRC, the Converse bodies for
tools, structured output and images, and Titan's and Cohere's embeddings."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable

import pytest

from hapaxd.core.errors import UpstreamError
from hapaxd.core.failures import FailureClass
from hapaxd.core.provider import ProviderSpec, Timeouts
from hapaxd.core.types import (
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
from hapaxd.providers import bedrock
from hapaxd.providers.bedrock import BedrockProvider, EventStreamDecoder
from tests.fakes.upstream import Call, Fail, FakeUpstream, Raw, Reply, aws

REQUEST = CompletionRequest(
    model="anthropic.claude-3-haiku-20240307-v1:0",
    messages=(Message(Role.SYSTEM, "Be brief."), Message(Role.USER, "Say hello.")),
    max_tokens=50,
)
FAST = Timeouts(connect=2.0, first_byte=5.0, idle=5.0, total=20.0)
SCHEMA = Json({"type": "object", "properties": {"city": {"type": "string"}}})

Env = Callable[..., None]
Make = Callable[..., BedrockProvider]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Env:
    def set_env(**credentials: object) -> None:
        aws.use_environment(monkeypatch, **credentials)

    set_env()
    return set_env


@pytest.fixture
async def make(fake_upstream: FakeUpstream, aws_env: Env) -> AsyncIterator[Make]:
    built: list[BedrockProvider] = []

    def factory(**options: str) -> BedrockProvider:
        spec = ProviderSpec(
            name="bedrock-test",
            type="bedrock",
            base_url=fake_upstream.base_url("bedrock"),
            timeouts=FAST,
            options={"region": aws.REGION, "control_url": fake_upstream.url, **options},
        )
        provider = BedrockProvider(spec)
        built.append(provider)
        return provider

    yield factory
    for provider in built:
        await provider.aclose()


SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>\w+)/(?P<date>\d{8})/us-east-1/bedrock/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=[0-9a-f]{64}"
)


# signing ---------------------------------------------------------------------------------------


async def test_requests_carry_a_sigv4_signature_the_fake_verifies(
    make: Make, fake_upstream: FakeUpstream
) -> None:
    await make().complete(REQUEST)
    sent = fake_upstream.last
    assert sent.path == "/model/anthropic.claude-3-haiku-20240307-v1:0/converse"
    match = SIGV4.fullmatch(sent.headers["authorization"])
    assert match is not None, sent.headers["authorization"]
    assert match["key"] == aws.ACCESS_KEY
    assert {"host", "x-amz-date", "content-type"} <= set(match["signed"].split(";"))
    assert sent.headers["x-amz-date"].startswith(match["date"])
    assert "x-amz-security-token" not in sent.headers
    assert aws.SECRET_KEY not in json.dumps(sent.headers)
    assert not fake_upstream.shape_errors  # the signature itself was recomputed and matched


PROFILE_ARN = (
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
    "us.anthropic.claude-3-haiku-20240307-v1:0"
)


@pytest.mark.parametrize("stream", [False, True], ids=["converse", "converse-stream"])
async def test_a_model_arn_goes_in_the_path_as_one_encoded_segment(
    make: Make, fake_upstream: FakeUpstream, stream: bool
) -> None:
    """An inference profile's (or a provisioned model's) ARN has ":" and "/" in it: it is one
    path segment, percent-encoded as AWS's SDKs send it (a bare "/" would make it two, and
    the runtime would answer 404), and the signature covers that path."""
    request = dataclasses.replace(REQUEST, model=PROFILE_ARN)
    provider = make()
    if stream:
        chunks = [c async for c in provider.stream(request)]
        assert "".join(c.delta for c in chunks) == "Hello from the fake upstream."
    else:
        answer = await provider.complete(request)
        assert answer.text == "Hello from the fake upstream."
        assert answer.upstream_model == PROFILE_ARN
    sent = fake_upstream.last
    assert sent.route == "bedrock.converse" and sent.model == PROFILE_ARN
    assert sent.path == f"/model/{PROFILE_ARN}/{'converse-stream' if stream else 'converse'}"
    assert not fake_upstream.shape_errors  # signed over the encoded path, and it matched


async def test_a_session_token_is_sent_and_signed(
    make: Make, fake_upstream: FakeUpstream, aws_env: Env
) -> None:
    aws_env(token=aws.SESSION_TOKEN)
    fake_upstream.aws.keys[aws.ACCESS_KEY] = (aws.SECRET_KEY, aws.SESSION_TOKEN)
    chunks = [c async for c in make().stream(REQUEST)]
    assert chunks[-1].finish_reason is FinishReason.STOP
    sent = fake_upstream.last
    assert sent.headers["x-amz-security-token"] == aws.SESSION_TOKEN
    assert "x-amz-security-token" in sent.headers["authorization"]


async def test_a_signature_with_the_wrong_secret_is_refused_as_a_credential_failure(
    make: Make, fake_upstream: FakeUpstream, aws_env: Env
) -> None:
    aws_env(secret_key="not-the-secret-the-fake-knows-0000000000")
    with pytest.raises(UpstreamError) as caught:
        await make().complete(REQUEST)
    assert caught.value.failure_class is FailureClass.CREDENTIAL
    assert caught.value.status == 403
    assert "InvalidSignatureException" in caught.value.message
    assert fake_upstream.shape_errors  # the fake saw the bad signature; expected here
    fake_upstream.shape_errors.clear()


async def test_no_credentials_in_the_chain_is_a_credential_failure_before_any_request(
    make: Make, fake_upstream: FakeUpstream, aws_env: Env
) -> None:
    aws_env(access_key=None)
    provider = make()
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(REQUEST)
    assert caught.value.failure_class is FailureClass.CREDENTIAL
    assert "no AWS credentials found" in caught.value.message
    with pytest.raises(UpstreamError):
        await anext(provider.stream(REQUEST))
    assert not fake_upstream.requests


async def test_credentials_come_from_the_shared_credentials_file(
    make: Make, fake_upstream: FakeUpstream, aws_env: Env, tmp_path: object
) -> None:
    import pathlib

    folder = pathlib.Path(str(tmp_path))
    aws_env(access_key=None, missing_files=str(folder))
    (folder / "credentials").write_text(
        f"[default]\naws_access_key_id = {aws.ACCESS_KEY}\n"
        f"aws_secret_access_key = {aws.SECRET_KEY}\n"
    )
    assert (await make().complete(REQUEST)).text == Reply().text


async def test_refreshable_credentials_are_frozen_per_request(
    fake_upstream: FakeUpstream, aws_env: Env
) -> None:
    """A refresh (an assumed role's, say) is taken by the next request, never mid-request."""
    from botocore.credentials import RefreshableCredentials

    given = iter(["AKIAFAKEBEDROCK00001", "AKIAFAKEBEDROCK00002"])
    fake_upstream.aws.keys["AKIAFAKEBEDROCK00002"] = (aws.SECRET_KEY, "token-2")
    fake_upstream.aws.keys[aws.ACCESS_KEY] = (aws.SECRET_KEY, "token-1")

    def refresh() -> dict[str, str]:
        key = next(given)
        return {
            "access_key": key,
            "secret_key": aws.SECRET_KEY,
            "token": f"token-{key[-1]}",
            "expiry_time": "2000-01-01T00:00:00Z" if key.endswith("1") else "2999-01-01T00:00:00Z",
        }

    credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")

    class Session:
        def get_credentials(self) -> RefreshableCredentials:
            return credentials

    spec = ProviderSpec(
        name="b",
        type="bedrock",
        base_url=fake_upstream.base_url("bedrock"),
        timeouts=FAST,
        options={"region": aws.REGION},
    )
    provider = BedrockProvider(spec, session=Session())
    try:
        await provider.complete(REQUEST)  # the first set has expired: refreshed before signing
        assert fake_upstream.last.headers["x-amz-security-token"] == "token-2"
    finally:
        await provider.aclose()


async def test_the_secret_and_session_token_are_scrubbed_from_error_text(
    make: Make, fake_upstream: FakeUpstream, aws_env: Env
) -> None:
    aws_env(token=aws.SESSION_TOKEN)
    fake_upstream.aws.keys[aws.ACCESS_KEY] = (aws.SECRET_KEY, aws.SESSION_TOKEN)
    message = f"echo {aws.SECRET_KEY} and {aws.SESSION_TOKEN}"
    fake_upstream.set_default(Fail(400, message=message))
    with pytest.raises(UpstreamError) as caught:
        await make().complete(REQUEST)
    assert aws.SECRET_KEY not in caught.value.message
    assert aws.SESSION_TOKEN not in caught.value.message
    assert caught.value.message.count("[REDACTED]") == 2


def test_region_is_required_and_picks_the_endpoints() -> None:
    with pytest.raises(ValueError, match="region"):
        BedrockProvider(ProviderSpec(name="b", type="bedrock"))
    assert bedrock.runtime_url("eu-west-1") == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    assert bedrock.control_url("eu-west-1") == "https://bedrock.eu-west-1.amazonaws.com"


# the event stream ------------------------------------------------------------------------------


def test_the_event_stream_decoder_takes_frames_split_anywhere() -> None:
    data = aws.event("contentBlockDelta", b'{"delta": {"text": "hi"}}') + aws.event(
        "messageStop", b'{"stopReason": "end_turn"}'
    )
    decoder = EventStreamDecoder("b")
    messages = [m for i in range(len(data)) for m in decoder.feed(data[i : i + 1])]
    assert [m.headers[":event-type"] for m in messages] == ["contentBlockDelta", "messageStop"]
    assert json.loads(messages[0].payload) == {"delta": {"text": "hi"}}


def test_a_crc_mismatch_is_a_transient_error() -> None:
    broken = aws.frame(
        {":event-type": "contentBlockDelta", ":message-type": "event"},
        b'{"delta": {"text": "hi"}}',
        corrupt=True,
    )
    with pytest.raises(UpstreamError) as caught:
        EventStreamDecoder("b").feed(broken)
    assert caught.value.failure_class is FailureClass.TRANSIENT
    assert "ChecksumMismatch" in caught.value.message


async def test_a_corrupt_frame_mid_stream_ends_the_stream_transient(
    make: Make, fake_upstream: FakeUpstream
) -> None:
    good = aws.event("messageStart", b'{"role": "assistant"}') + aws.event(
        "contentBlockDelta", b'{"delta": {"text": "Hel"}, "contentBlockIndex": 0}'
    )
    bad = aws.frame(
        {":event-type": "contentBlockDelta", ":message-type": "event"},
        b'{"delta": {"text": "lo"}, "contentBlockIndex": 0}',
        corrupt=True,
    )
    fake_upstream.set_default(Raw((good, bad), content_type="application/vnd.amazon.eventstream"))
    chunks = []
    with pytest.raises(UpstreamError) as caught:
        async for chunk in make().stream(REQUEST):
            chunks.append(chunk)
    assert [c.delta for c in chunks] == ["Hel"]
    assert caught.value.failure_class is FailureClass.TRANSIENT


async def test_a_mid_stream_exception_frame_names_its_type(
    make: Make, fake_upstream: FakeUpstream
) -> None:
    error = Fail(429, message="Too many tokens, please wait.")
    fake_upstream.set_default(Reply(chunks=3, error_after=2, error=error))
    chunks = []
    with pytest.raises(UpstreamError) as caught:
        async for chunk in make().stream(REQUEST):
            chunks.append(chunk)
    assert len(chunks) == 2
    assert caught.value.failure_class is FailureClass.RATE_LIMITED
    assert "Too many tokens" in caught.value.message
    assert "ThrottlingException" in caught.value.message


# bodies ----------------------------------------------------------------------------------------


TOOLS = CompletionRequest(
    model="m",
    messages=(
        Message(Role.USER, "Weather?"),
        Message(
            Role.ASSISTANT, "", tool_calls=(ToolCall("t1", "get_weather", '{"city": "Oslo"}'),)
        ),
        Message(Role.TOOL, '{"temp": -3}', tool_call_id="t1"),
        Message(Role.TOOL, "windy", tool_call_id="t2"),
    ),
    tools=(Tool("get_weather", "The weather", SCHEMA), Tool("get_time")),
    tool_choice=ToolChoice(ToolMode.FUNCTION, "get_weather"),
)


async def test_tools_tool_choice_and_tool_results(make: Make, fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_default(Reply(text="", tool_calls=(Call("tu_1"),), finish="tool_calls"))
    completion = await make().complete(TOOLS)
    assert completion.finish_reason is FinishReason.TOOL_CALLS
    assert completion.tool_calls == (ToolCall("tu_1", "get_weather", '{"city": "Oslo"}'),)
    body = fake_upstream.last.json
    assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    assert body["toolConfig"]["tools"][1]["toolSpec"] == {
        "name": "get_time",
        "inputSchema": {"json": {"type": "object", "properties": {}}},
    }
    assert body["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Oslo"}}}
    ]
    # both results in one user turn: JSON objects as json, other text as text
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {
                "toolResult": {
                    "toolUseId": "t1",
                    "content": [{"json": {"temp": -3}}],
                    "status": "success",
                }
            },
            {
                "toolResult": {
                    "toolUseId": "t2",
                    "content": [{"text": "windy"}],
                    "status": "success",
                }
            },
        ],
    }


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_structured_output_through_a_forced_tool(
    mode: str, make: Make, fake_upstream: FakeUpstream
) -> None:
    answer = '{"city": "Oslo"}'
    fake_upstream.set_default(
        Reply(text="", tool_calls=(Call("tu_9", "weather", answer),), finish="tool_calls")
    )
    request = CompletionRequest(
        model="m",
        messages=(Message(Role.USER, "Where?"),),
        response_format=ResponseFormat(FormatType.JSON_SCHEMA, name="weather", schema=SCHEMA),
    )
    provider = make()
    if mode == "complete":
        completion = await provider.complete(request)
        text, finish, calls = completion.text, completion.finish_reason, completion.tool_calls
    else:
        chunks = [c async for c in provider.stream(request)]
        text = "".join(c.delta for c in chunks)
        finish, calls = chunks[-1].finish_reason, tuple(d for c in chunks for d in c.tool_calls)
    assert json.loads(text) == {"city": "Oslo"}
    assert finish is FinishReason.STOP and not calls
    config = fake_upstream.last.json["toolConfig"]
    assert config["toolChoice"] == {"tool": {"name": "weather"}}
    assert config["tools"][0]["toolSpec"]["inputSchema"] == {"json": SCHEMA.value}


async def test_images_go_as_bytes_and_urls_are_refused(
    make: Make, fake_upstream: FakeUpstream
) -> None:
    image = Image(data=b"\x89PNG\r\n", mime_type="image/png")
    request = CompletionRequest(
        model="m", messages=(Message(Role.USER, "What?", parts=("What?", image)),)
    )
    await make().complete(request)
    assert fake_upstream.last.json["messages"][0]["content"] == [
        {"text": "What?"},
        {"image": {"format": "png", "source": {"bytes": "iVBORw0K"}}},
    ]
    by_url = Message(Role.USER, "x", parts=("x", Image(url="https://example.com/a.png")))
    with pytest.raises(UpstreamError) as caught:
        await make().complete(CompletionRequest(model="m", messages=(by_url,)))
    assert caught.value.failure_class is FailureClass.CALLER
    assert len(fake_upstream.requests) == 1


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_reasoning_cache_counts_and_settings(
    mode: str, make: Make, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(text="Cold.", reasoning="Winter.", cached_tokens=4))
    request = CompletionRequest(
        model="m",
        messages=(Message(Role.USER, "Weather?"),),
        max_tokens=64,
        temperature=0.5,
        top_p=0.9,
        stop=("END",),
        vendor_options=(("bedrock", Json({"top_k": 5})),),
    )
    provider = make()
    if mode == "complete":
        completion = await provider.complete(request)
        reasoning, usage = completion.reasoning, completion.usage
    else:
        chunks = [c async for c in provider.stream(request)]
        reasoning, usage = "".join(c.reasoning for c in chunks), chunks[-1].usage
    assert reasoning == "Winter."
    assert usage == Usage(prompt_tokens=11, completion_tokens=3, cached_prompt_tokens=4)
    body = fake_upstream.last.json
    assert body["inferenceConfig"] == {
        "maxTokens": 64,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert body["system"] if "system" in body else True
    assert body["additionalModelRequestFields"] == {"top_k": 5}


@pytest.mark.parametrize(
    ("wire", "finish"),
    [("guardrail_intervened", FinishReason.CONTENT_FILTER), ("stop_sequence", FinishReason.STOP)],
)
def test_stop_reasons(wire: str, finish: FinishReason) -> None:
    assert bedrock.stop_reason(wire) is finish


# embeddings ------------------------------------------------------------------------------------


async def test_titan_embeddings_one_call_per_text(make: Make, fake_upstream: FakeUpstream) -> None:
    model = "amazon.titan-embed-text-v2:0"
    answer = await make().embed(EmbeddingRequest(model, ("one two", "three"), dimensions=4))
    assert answer.vectors == ((7.0, 0.0, 0.25, 0.25), (5.0, 0.0, 0.25, 0.25))
    assert answer.usage == Usage(prompt_tokens=3)  # the inputTextTokenCounts added
    sent = fake_upstream.requests_to("bedrock.embed")
    assert sorted(r.json["inputText"] for r in sent) == ["one two", "three"]
    assert all(r.json["dimensions"] == 4 for r in sent)
    assert all(r.path == f"/model/{model}/invoke" for r in sent)


async def test_cohere_embeddings_in_one_call(make: Make, fake_upstream: FakeUpstream) -> None:
    answer = await make().embed(EmbeddingRequest("cohere.embed-english-v3", ("a", "bb")))
    assert answer.vectors == ((1.0, 0.0, 0.25), (2.0, 1.0, 0.25))
    assert fake_upstream.last.json == {"texts": ["a", "bb"], "input_type": "search_document"}


async def test_cohere_embeddings_with_a_vector_missing_are_transient(
    make: Make, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_default(Reply(vectors=1))
    with pytest.raises(UpstreamError) as caught:
        await make().embed(EmbeddingRequest("cohere.embed-english-v3", ("a", "bb")))
    assert caught.value.failure_class is FailureClass.TRANSIENT


async def test_an_embedding_model_of_no_known_family_is_the_callers(
    make: Make, fake_upstream: FakeUpstream
) -> None:
    with pytest.raises(UpstreamError) as caught:
        await make().embed(EmbeddingRequest("meta.llama3-8b-instruct-v1:0", ("a",)))
    assert caught.value.failure_class is FailureClass.CALLER
    assert not fake_upstream.requests


def test_embedding_family_by_model_id() -> None:
    assert bedrock.embedding_family("us.cohere.embed-v4:0") == "cohere"
    assert bedrock.embedding_family("amazon.titan-embed-text-v1") == "titan"
    arn = "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
    assert bedrock.embedding_family(arn) == "titan"


async def test_probe_is_a_signed_list_of_foundation_models(
    make: Make, fake_upstream: FakeUpstream
) -> None:
    await make().probe()
    sent = fake_upstream.last
    assert (sent.route, sent.method, sent.path) == ("bedrock.models", "GET", "/foundation-models")
    assert sent.query == {"byOutputModality": "EMBEDDING", "byProvider": "Amazon"}
    assert SIGV4.fullmatch(sent.headers["authorization"])
