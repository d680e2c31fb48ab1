"""Secrets never reach the logs: traffic with provider keys and metrics credentials, every record
grepped; plus the redactor itself on the shapes secrets arrive in."""

from __future__ import annotations

import logging
import pathlib

import grpc
import pytest

from hapax.v1 import admin_service_pb2
from hapax.v1 import completion_service_pb2 as pb
from hapaxd.observability import redaction
from tests.fakes.upstream import Fail, FakeUpstream
from tests.observability.conftest import Observe, openai_provider, settings_with
from tests.support.logcapture import (
    BACKUP_KEY,
    METRICS_PASSWORD,
    METRICS_TOKEN,
    OPENAI_KEY,
    SECRETS,
    leaked,
)


async def test_traffic_with_keys_logs_no_secret(
    observe: Observe, fake_upstream: FakeUpstream, all_logs: logging.Handler
) -> None:
    settings = settings_with(
        providers=[
            openai_provider(fake_upstream, "primary", api_key_env="OPENAI_TEST_KEY"),
            openai_provider(fake_upstream, "backup", api_key_env="BACKUP_TEST_KEY"),
        ],
        metrics={
            "bearer_token_env": "METRICS_TOKEN",
            "basic_auth_user": "prom",
            "basic_auth_password_env": "METRICS_PASSWORD",
        },
        router={"retry": {"max_attempts": 1}},
        circuit_breaker={"failure_threshold": 1, "timeout": "1h"},
    )
    observed = await observe(settings)
    before = len(all_logs.lines)  # type: ignore[attr-defined]
    fake_upstream.script("openai.chat", Fail(401, message=f"Incorrect API key: {OPENAI_KEY}"))
    await observed.stub.Complete(pb.CompleteRequest(prompt="hello"))
    assert fake_upstream.requests[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"
    fake_upstream.script("openai.chat", Fail(400, message=f"bad request, key was {BACKUP_KEY}"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await observed.stub.Complete(pb.CompleteRequest(prompt="again"))
    assert "bad request, key was [REDACTED]" in str(caught.value.details())
    listing = await observed.gateway.admin.ListProviders(admin_service_pb2.ListProvidersRequest())
    assert "[REDACTED]" in str(listing)
    assert not leaked([str(listing), str(caught.value.details())], set(SECRETS.values()))
    await observed.get("/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}x"})
    await observed.get("/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
    # Code that logs a secret by mistake is redacted too, in messages, arguments and tracebacks.
    log = logging.getLogger("hapaxd.test")
    log.warning("upstream said %s", f"invalid key {OPENAI_KEY}")
    log.warning(f"headers {{'Authorization': 'Bearer {METRICS_TOKEN}'}}")
    try:
        raise RuntimeError(f"password={METRICS_PASSWORD}")
    except RuntimeError:
        log.exception("failed with %s", BACKUP_KEY)

    lines = all_logs.lines[before:]  # type: ignore[attr-defined]
    assert len(lines) >= 7
    assert any("[REDACTED]" in line for line in lines)
    assert not leaked(lines, set(SECRETS.values()))
    assert set(SECRETS.values()) <= observed.obs.redactor.secrets()
    assert set(SECRETS.values()) <= redaction.attached_secrets()


GEMINI_KEY = "AIzaSyFakeGeminiKey0123456789abcdefghij"


async def test_a_gemini_key_travels_in_its_header_and_is_masked_everywhere(
    observe: Observe, fake_upstream: FakeUpstream, all_logs: logging.Handler
) -> None:
    settings = settings_with(
        environ={"GEMINI_TEST_KEY": GEMINI_KEY},
        providers=[
            {
                "name": "gemini",
                "type": "gemini",
                "base_url": fake_upstream.base_url("gemini"),
                "models": {"*": "gemini-2.5-flash"},
                "api_key_env": "GEMINI_TEST_KEY",
            }
        ],
        router={"retry": {"max_attempts": 1}},
    )
    observed = await observe(settings)
    before = len(all_logs.lines)  # type: ignore[attr-defined]
    fake_upstream.script("gemini.generate", Fail(401, message=f"bad key {GEMINI_KEY} given"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await observed.stub.Complete(pb.CompleteRequest(prompt="hello"))
    sent = fake_upstream.requests[0]
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY  # in its header,
    assert GEMINI_KEY not in sent.path and not sent.query  # never in the URL
    assert "bad key [REDACTED] given" in str(caught.value.details())
    listing = await observed.gateway.admin.ListProviders(admin_service_pb2.ListProvidersRequest())
    assert "[REDACTED]" in str(listing)
    lines = all_logs.lines[before:]  # type: ignore[attr-defined]
    assert lines
    assert not leaked([*lines, str(listing), str(caught.value.details())], {GEMINI_KEY})
    assert GEMINI_KEY in observed.obs.redactor.secrets()


async def test_a_vertex_service_account_key_is_masked_everywhere(
    observe: Observe,
    fake_upstream: FakeUpstream,
    all_logs: logging.Handler,
    tmp_path: pathlib.Path,
) -> None:
    """The key file is read at load; its private key (whole, or any line of it) never reaches a
    log, an error or ListProviders, and the OAuth2 token it mints travels as a bearer token."""
    key_file = tmp_path / "service-account.json"
    key_file.write_text(fake_upstream.service_account())
    pem = fake_upstream.oauth.private_key_pem()
    line = pem.splitlines()[3]  # a piece of the key, as a careless upstream might echo it
    settings = settings_with(
        providers=[
            {
                "name": "vertex",
                "type": "vertex",
                "base_url": fake_upstream.base_url("vertex"),
                "models": {"*": "gemini-2.5-flash"},
                "options": {
                    "project": "test-project",
                    "location": "us-central1",
                    "credentials_file": str(key_file),
                },
            }
        ],
        router={"retry": {"max_attempts": 1}},
    )
    assert pem not in repr(settings)
    observed = await observe(settings)
    before = len(all_logs.lines)  # type: ignore[attr-defined]
    fake_upstream.script("vertex.generate", Fail(400, message=f"bad key {line} given"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await observed.stub.Complete(pb.CompleteRequest(prompt="hello"))
    assert fake_upstream.requests[0].headers["authorization"] == "Bearer ya29.fake-1"
    assert "bad key [REDACTED] given" in str(caught.value.details())
    listing = await observed.gateway.admin.ListProviders(admin_service_pb2.ListProvidersRequest())
    assert "[REDACTED]" in str(listing)
    log = logging.getLogger("hapaxd.test")
    log.warning("loaded %s", key_file.read_text())  # the whole file, by mistake
    lines = all_logs.lines[before:]  # type: ignore[attr-defined]
    assert lines
    secrets = {pem, line, pem.replace("\n", "\\n")}
    assert not leaked([*lines, str(listing), str(caught.value.details())], secrets)
    assert {pem, line} <= observed.obs.redactor.secrets()


def test_redactor_masks_header_shapes_and_configured_patterns() -> None:
    redactor = redaction.Redactor()
    redactor.add(["literal-secret-value", "short"], [r"\b\d{3}-\d{2}-\d{4}\b"])
    cases = {
        "authorization: Bearer abc.def.ghi": "authorization: Bearer [REDACTED]",
        "{'Authorization': 'Basic dXNlcjpwYXNz'}": "{'Authorization': 'Basic [REDACTED]'}",
        "x-api-key=abcdef123456&next=1": "x-api-key=[REDACTED]&next=1",
        '"api-key": "0123456789"': '"api-key": "[REDACTED]"',
        "token Bearer eyJhbGciOiJIUzI1NiJ9.x": "token Bearer [REDACTED]",
        "key sk-ant-api03-abcdefghijklmnop in text": "key [REDACTED] in text",
        "key AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q, next": "key [REDACTED], next",
        "x-goog-api-key: some-proxy-key-value": "x-goog-api-key: [REDACTED]",
        "the literal-secret-value leaked": "the [REDACTED] leaked",
        "ssn 123-45-6789": "ssn [REDACTED]",
        "short words stay": "short words stay",  # below the minimum secret length
        "api_key_env=OPENAI_API_KEY": "api_key_env=OPENAI_API_KEY",  # names are not secrets
    }
    for text, expected in cases.items():
        assert redactor.redact(text) == expected, text


async def test_bedrock_aws_secrets_are_masked_everywhere(
    observe: Observe,
    fake_upstream: FakeUpstream,
    all_logs: logging.Handler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The secret access key and session token from the AWS chain never reach a log, an error
    or ListProviders; the requests carry only the signature and the (signed) token header."""
    from tests.fakes.upstream import aws

    aws.use_environment(monkeypatch, token=aws.SESSION_TOKEN)
    fake_upstream.aws.keys[aws.ACCESS_KEY] = (aws.SECRET_KEY, aws.SESSION_TOKEN)
    settings = settings_with(
        providers=[
            {
                "name": "bedrock",
                "type": "bedrock",
                "base_url": fake_upstream.base_url("bedrock"),
                "models": {"*": "anthropic.claude-3-haiku-20240307-v1:0"},
                "options": {"region": aws.REGION, "control_url": fake_upstream.url},
            }
        ],
        router={"retry": {"max_attempts": 1}},
    )
    observed = await observe(settings)
    before = len(all_logs.lines)  # type: ignore[attr-defined]
    echo = f"bad key {aws.SECRET_KEY} with {aws.SESSION_TOKEN}"
    fake_upstream.script("bedrock.converse", Fail(400, message=echo))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await observed.stub.Complete(pb.CompleteRequest(prompt="hello"))
    assert fake_upstream.requests[0].headers["x-amz-security-token"] == aws.SESSION_TOKEN
    assert "bad key [REDACTED] with [REDACTED]" in str(caught.value.details())
    listing = await observed.gateway.admin.ListProviders(admin_service_pb2.ListProvidersRequest())
    log = logging.getLogger("hapaxd.test")
    log.warning("credentials %s %s", aws.SECRET_KEY, aws.SESSION_TOKEN)  # by mistake
    lines = all_logs.lines[before:]  # type: ignore[attr-defined]
    secrets = {aws.SECRET_KEY, aws.SESSION_TOKEN}
    assert not leaked([*lines, str(listing), str(caught.value.details())], secrets)
    assert secrets <= observed.obs.redactor.secrets()
