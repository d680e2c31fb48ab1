"""The wire shapes, judged by the vendors' own SDK types (openai, anthropic, ollama, google-genai on
PyPI; botocore's service model for Bedrock):

- every payload the fake upstream sends (whole answers and each stream event, with text, tool
  calls, reasoning and cache counts) parses as the vendor's response types, so the fakes cannot
  drift from the real wire;
- every request body the adapters build for a request using the whole contract (images, tools,
  tool results, each response format, seed, penalties, vendor options), unary and streaming,
  passes the vendor's request types with unknown keys refused;
- and the judge itself refuses a wrong shape, so these checks can fail.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer

from hapaxd.core.types import (
    CompletionRequest,
    EmbeddingRequest,
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
)
from hapaxd.providers import anthropic, bedrock, gemini, ollama, openai
from tests.fakes.upstream import Call, Reply
from tests.fakes.upstream.shapes import (
    ShapeError,
    check_answer,
    check_bedrock_event,
    check_embed_answer,
    check_embed_request,
    check_event,
    check_request,
)
from tests.fakes.upstream.wire import WIRES

REPLIES = {
    "text": Reply(text="Hello there."),
    "tools": Reply(
        text="", tool_calls=(Call(), Call("call_2", "get_time", "{}")), finish="tool_calls"
    ),
    "text-and-tool": Reply(text="Let me look.", tool_calls=(Call(),), finish="tool_calls"),
    "reasoning": Reply(text="Cold.", reasoning="Winter.", cached_tokens=3, reasoning_tokens=2),
    "length": Reply(text="Cut sh", finish="length"),
}


def events(vendor: str, frame: str) -> list[Any]:
    """The JSON objects in one rendered stream frame (SSE `data:` lines, or an NDJSON line)."""
    if vendor == "ollama":
        return [json.loads(frame)]
    found = []
    for line in frame.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            found.append(json.loads(line[len("data: ") :]))
    return found


@pytest.mark.parametrize("vendor", list(WIRES))
@pytest.mark.parametrize("reply", list(REPLIES))
def test_the_fakes_payloads_parse_as_the_vendors_published_types(vendor: str, reply: str) -> None:
    wire = WIRES[vendor]
    check_answer(vendor, wire.completion(REPLIES[reply], "some-model"))
    frames = wire.frames(REPLIES[reply], "some-model")
    if vendor == "bedrock":  # binary event-stream messages, judged by their :event-type
        buffer = EventStreamBuffer()
        for frame in (*frames.opening, *frames.content, *frames.closing):
            buffer.add_data(frame)
        messages = list(buffer)
        assert [m.headers[":event-type"] for m in messages][-2:] == ["messageStop", "metadata"]
        for message in messages:
            payload = json.loads(message.payload)
            payload.pop("p")  # the padding the real stream adds, which the model does not name
            check_bedrock_event(message.headers[":event-type"], payload)
        return
    objects = [
        o for f in (*frames.opening, *frames.content, *frames.closing) for o in events(vendor, f)
    ]
    assert objects, "no events rendered"
    for obj in objects:
        if vendor == "azure" and not obj.get("choices"):
            continue  # Azure's prompt-filter preamble has no choices, as on the real wire
        if vendor == "anthropic" and obj["type"] == "ping":
            continue  # sent on the real wire; the SDK's stream reader drops it before parsing
        check_event(vendor, obj)


def rich_request(form: FormatType | None) -> CompletionRequest:
    schema = Json(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    )
    return CompletionRequest(
        model="m",
        messages=(
            Message(Role.SYSTEM, "Be brief."),
            Message(
                Role.USER,
                "What is this?",
                parts=(
                    "What is this?",
                    Image(data=b"\x89PNG", mime_type="image/png"),
                ),
            ),
            Message(
                Role.ASSISTANT,
                "",
                tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),),
            ),
            Message(Role.TOOL, "-3C", tool_call_id="call_1"),
            Message(Role.ASSISTANT, "It is cold."),
            Message(Role.USER, "Thanks"),
        ),
        max_tokens=100,
        temperature=0.2,
        top_p=0.9,
        stop=("END",),
        user="end-user-1",
        tools=(Tool("get_weather", "The weather", schema, strict=True), Tool("get_time")),
        tool_choice=ToolChoice(ToolMode.FUNCTION, "get_weather"),
        parallel_tool_calls=False,
        response_format=(
            None
            if form is None
            else ResponseFormat(
                form,
                name="answer" if form is FormatType.JSON_SCHEMA else "",
                schema=schema if form is FormatType.JSON_SCHEMA else None,
                strict=True,
            )
        ),
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        vendor_options=(
            ("anthropic", Json({"thinking": {"type": "enabled", "budget_tokens": 1024}})),
            ("ollama", Json({"think": True})),
            ("gemini", Json({"thinkingConfig": {"includeThoughts": True}})),
            ("openai", Json({"reasoning_effort": "low"})),
            (
                "bedrock",
                Json(
                    {
                        "top_k": 40,
                        "guardrailConfig": {"guardrailIdentifier": "g1", "guardrailVersion": "1"},
                    }
                ),
            ),
        ),
    )


HTTPS_IMAGE = Image(url="https://example.com/a.png")
# As validation leaves an object URI: with the MIME type its name says.
S3_IMAGE = Image(url="s3://bucket/a.png", mime_type="image/png")
GS_IMAGE = Image(url="gs://bucket/a.png", mime_type="image/png")


def with_url_image(request: CompletionRequest, image: Image = HTTPS_IMAGE) -> CompletionRequest:
    first = Message(Role.USER, "Look", parts=("Look", image))
    return CompletionRequest(model="m", messages=(first,))


FORMATS = pytest.mark.parametrize(
    "form", [None, FormatType.TEXT, FormatType.JSON_OBJECT, FormatType.JSON_SCHEMA]
)
STREAMS = pytest.mark.parametrize("stream", [False, True])


@FORMATS
@STREAMS
def test_openai_bodies_pass_the_openai_sdk_types(form: FormatType | None, stream: bool) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        body = openai.to_wire(rich_request(form), stream=stream, max_tokens_field=field)
        check_request("openai", body, stream=stream)
    check_request("openai", openai.to_wire(with_url_image(rich_request(None))), stream=False)


@FORMATS
@STREAMS
def test_anthropic_bodies_pass_the_anthropic_sdk_types(
    form: FormatType | None, stream: bool
) -> None:
    body = anthropic.to_wire(rich_request(form), stream=stream)
    check_request("anthropic", body, stream=stream)
    check_request("anthropic", anthropic.to_wire(with_url_image(rich_request(None))), stream=False)


@FORMATS
@STREAMS
def test_ollama_bodies_pass_the_ollama_sdk_types(form: FormatType | None, stream: bool) -> None:
    check_request("ollama", ollama.to_wire(rich_request(form), stream=stream), stream=stream)


@FORMATS
@STREAMS
def test_gemini_bodies_pass_the_google_genai_sdk_types(
    form: FormatType | None, stream: bool
) -> None:
    check_request("gemini", gemini.to_wire(rich_request(form)), stream=stream)
    check_request("gemini", gemini.to_wire(with_url_image(rich_request(None))), stream=False)
    by_gs = gemini.to_wire(with_url_image(rich_request(None), GS_IMAGE))  # Vertex's wire
    check_request("gemini", by_gs, stream=False)
    assert by_gs["contents"][0]["parts"][1] == {
        "fileData": {"fileUri": "gs://bucket/a.png", "mimeType": "image/png"}
    }


@FORMATS
@STREAMS
def test_bedrock_bodies_pass_botocores_converse_shape(
    form: FormatType | None, stream: bool
) -> None:
    body = bedrock.to_wire(rich_request(form))
    check_request("bedrock", body, stream=stream)
    assert body["additionalModelRequestFields"] == {"top_k": 40}
    assert body["guardrailConfig"]["guardrailIdentifier"] == "g1"
    with pytest.raises(ValueError, match="inline images and s3:// objects only"):
        bedrock.to_wire(with_url_image(rich_request(None)))
    by_s3 = bedrock.to_wire(with_url_image(rich_request(None), S3_IMAGE))
    check_request("bedrock", by_s3, stream=stream)
    assert by_s3["messages"][0]["content"][1]["image"]["source"] == {
        "s3Location": {"uri": "s3://bucket/a.png"}
    }


@pytest.mark.parametrize(
    ("vendor", "body"),
    [
        ("openai", {"model": "m", "messages": [{"role": "user", "contents": "hi"}]}),
        ("openai", {"model": "m", "messages": [{"role": "tool", "content": "no call id"}]}),
        (
            "openai",
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"name": "f"}],
            },
        ),
        ("openai", {"model": "m", "messages": [], "max_token": 5}),
        (
            "anthropic",
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "image", "url": "https://x"}]}],
            },
        ),
        ("anthropic", {"model": "m", "messages": []}),
        ("ollama", {"model": "m", "messages": [], "tool_choice": "auto"}),
        ("gemini", {"contents": [{"role": "user", "parts": [{"txt": "hi"}]}]}),
        ("gemini", {"contents": [], "generationConfig": {"max_output_tokens": 5}}),
        ("gemini", {"contents": [], "model": "m"}),
        ("bedrock", {"messages": [{"role": "user", "content": [{"txt": "hi"}]}]}),
        ("bedrock", {"messages": [], "inferenceConfig": {"max_tokens": 5}}),
        ("bedrock", {"messages": [], "modelId": "m"}),
    ],
    ids=[
        "openai-misspelt",
        "openai-tool-without-id",
        "openai-tool-shape",
        "openai-unknown-top-key",
        "anthropic-image-source",
        "anthropic-no-max-tokens",
        "ollama-unknown-key",
        "gemini-unknown-part-key",
        "gemini-snake-case-field",
        "gemini-model-in-body",
        "bedrock-unknown-block-key",
        "bedrock-snake-case-field",
        "bedrock-model-in-body",
    ],
)
def test_the_judge_refuses_wrong_shapes(vendor: str, body: dict[str, Any]) -> None:
    with pytest.raises(ShapeError):
        check_request(vendor, body, stream=False)


def test_the_judge_refuses_a_wrong_answer_payload() -> None:
    with pytest.raises(ShapeError):
        check_answer("anthropic", {"id": "x", "type": "message", "content": [{"type": "text"}]})
    with pytest.raises(ShapeError):
        check_event("openai", {"id": "x", "object": "chat.completion.chunk", "choices": "none"})
    with pytest.raises(ShapeError):
        check_answer("bedrock", {"output": {"message": {"role": "assistant", "content": "x"}}})
    with pytest.raises(ShapeError):
        check_bedrock_event("contentBlockDelta", {"delta": {"txt": "x"}, "contentBlockIndex": 0})


@pytest.mark.parametrize("vendor", ["openai", "azure", "ollama", "gemini"])
def test_the_fakes_embeddings_parse_as_the_vendors_published_types(vendor: str) -> None:
    body = WIRES[vendor].embeddings(Reply(), "embed-model", ["a", "bb"], 5)  # type: ignore[union-attr]
    check_embed_answer(vendor, body)


@pytest.mark.parametrize("dimensions", [None, 8])
def test_embedding_bodies_pass_the_sdk_types(dimensions: int | None) -> None:
    request = EmbeddingRequest("m", ("a", "b"), dimensions=dimensions, user="u")
    check_embed_request("openai", openai.embed_to_wire(request))
    check_embed_request("ollama", ollama.embed_to_wire(request))
    check_embed_request("gemini", gemini.embed_to_wire(request))
    with pytest.raises(ShapeError):
        check_embed_request("openai", {"model": "m", "inputs": ["a"]})
    with pytest.raises(ShapeError):
        check_embed_request("gemini", {"requests": [{"model": "models/m", "text": "a"}]})
    check_embed_request("bedrock", bedrock.titan_to_wire("a", dimensions))
    check_embed_request("bedrock", bedrock.cohere_to_wire(["a", "b"], dimensions))
    with pytest.raises(ShapeError):
        check_embed_request("bedrock", {"inputText": "a", "dimension": 8})
