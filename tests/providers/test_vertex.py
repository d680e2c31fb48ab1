"""Vertex AI (type "vertex") beyond the scenario suite (tests/providers/test_adapters.py runs
every scenario for it too): its URLs, the OAuth2 tokens of its service account (minted by
google-auth against the fake's token endpoint, which checks the signed assertion), and its
config: what check-config names, the key file read at load and never shown."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
from collections.abc import AsyncIterator, Callable

import pytest

from hapaxd import config
from hapaxd.config.provider_types import file_secrets
from hapaxd.core.errors import UpstreamError
from hapaxd.core.failures import FailureClass
from hapaxd.core.provider import ProviderSpec, Timeouts
from hapaxd.core.types import CompletionRequest, EmbeddingRequest, Message, Role
from hapaxd.providers.registry import spec_of
from hapaxd.providers.vertex import VertexProvider, default_base_url
from tests.fakes.upstream import Fail, FakeUpstream
from tests.fakes.upstream.oauth import TokenEndpoint

REQUEST = CompletionRequest(
    model="gemini-2.5-flash", messages=(Message(Role.USER, "Say hello."),), max_tokens=20
)
FAST = Timeouts(connect=2.0, first_byte=5.0, idle=5.0, total=20.0)
PREFIX = "/v1/projects/test-project/locations/us-central1/publishers/google/models"

Factory = Callable[..., VertexProvider]


@pytest.fixture
async def make(fake_upstream: FakeUpstream) -> AsyncIterator[Factory]:
    built: list[VertexProvider] = []

    def factory(expires_in: int = 3600, **overrides: object) -> VertexProvider:
        fields: dict[str, object] = {
            "name": "vertex-test",
            "type": "vertex",
            "base_url": fake_upstream.base_url("vertex"),
            "timeouts": FAST,
            "options": {"project": "test-project", "location": "us-central1"},
            "credentials": fake_upstream.service_account(expires_in),
        }
        provider = VertexProvider(ProviderSpec(**{**fields, **overrides}))  # type: ignore[arg-type]
        built.append(provider)
        return provider

    yield factory
    for provider in built:
        await provider.aclose()


async def collect(provider: VertexProvider) -> str:
    return "".join([c.delta async for c in provider.stream(REQUEST)])


# URLs ------------------------------------------------------------------------------------------


async def test_paths_name_project_location_and_model(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make()
    await provider.complete(REQUEST)
    await collect(provider)
    await provider.embed(EmbeddingRequest("text-embedding-005", ("a", "bb"), dimensions=4))
    await provider.probe()
    chat, stream, embed, probe = fake_upstream.requests
    assert chat.path == f"{PREFIX}/gemini-2.5-flash:generateContent" and chat.query == {}
    assert stream.path == f"{PREFIX}/gemini-2.5-flash:streamGenerateContent"
    assert stream.query == {"alt": "sse"}
    assert embed.path == f"{PREFIX}/text-embedding-005:predict"
    assert embed.json == {
        "instances": [{"content": "a"}, {"content": "bb"}],
        "parameters": {"outputDimensionality": 4},
    }
    assert probe.method == "GET" and probe.path == f"{PREFIX}/gemini-2.5-flash"
    for sent in (chat, stream, embed, probe):  # a bearer token, never an API key
        assert sent.headers["authorization"] == "Bearer ya29.fake-1"
        assert "x-goog-api-key" not in sent.headers and "key" not in sent.query


async def test_probe_model_and_global_location(make: Factory, fake_upstream: FakeUpstream) -> None:
    options = {"project": "p-1", "location": "global", "probe_model": "gemini-2.5-pro"}
    await make(options=options).probe()
    path = "/v1/projects/p-1/locations/global/publishers/google/models/gemini-2.5-pro"
    assert fake_upstream.last.path == path


def test_default_hosts_are_regional_or_global() -> None:
    assert default_base_url("europe-west4") == "https://europe-west4-aiplatform.googleapis.com"
    assert default_base_url("global") == "https://aiplatform.googleapis.com"
    regional = VertexProvider(
        ProviderSpec(name="v", type="vertex", options={"project": "p", "location": "us-east5"})
    )
    url = "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5"
    assert regional._url("m", "generateContent") == (
        f"{url}/publishers/google/models/m:generateContent"
    )
    world = VertexProvider(
        ProviderSpec(name="v", type="vertex", options={"project": "p", "location": "global"})
    )
    assert world._url("m", "predict").startswith(
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/"
    )


def test_project_and_location_are_required() -> None:
    with pytest.raises(ValueError, match="project, location"):
        VertexProvider(ProviderSpec(name="v", type="vertex", options={"project": "p"}))


# tokens ----------------------------------------------------------------------------------------


async def test_one_token_serves_many_calls(make: Factory, fake_upstream: FakeUpstream) -> None:
    provider = make()
    for _ in range(3):
        await provider.complete(REQUEST)
        await collect(provider)
    await provider.probe()
    assert fake_upstream.oauth.requests == 1
    assert provider.tokens.minted == 1
    assert {r.headers["authorization"] for r in fake_upstream.requests} == {"Bearer ya29.fake-1"}


async def test_a_token_near_its_expiry_is_refreshed(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    """google-auth refreshes 3m45s before expiry: a 60-second token is stale at once."""
    provider = make(expires_in=60)
    await provider.complete(REQUEST)
    await provider.complete(REQUEST)
    assert fake_upstream.oauth.requests == 2
    assert [r.headers["authorization"] for r in fake_upstream.requests] == [
        "Bearer ya29.fake-1",
        "Bearer ya29.fake-2",
    ]


async def test_concurrent_calls_share_one_refresh(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make()
    await asyncio.gather(*(provider.complete(REQUEST) for _ in range(10)))
    await asyncio.gather(*(collect(provider) for _ in range(5)))
    assert fake_upstream.oauth.requests == 1
    assert len(fake_upstream.requests) == 15


async def test_a_refused_token_is_dropped_and_the_next_call_mints_one(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make()
    fake_upstream.script("vertex.generate", Fail(401))
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(REQUEST)
    assert caught.value.failure_class is FailureClass.CREDENTIAL
    await provider.complete(REQUEST)
    assert fake_upstream.oauth.requests == 2
    assert fake_upstream.last.headers["authorization"] == "Bearer ya29.fake-2"


async def test_the_token_endpoint_refusing_the_grant_is_a_credential_failure(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make()
    fake_upstream.oauth.refuse = "invalid_grant"
    for call in (provider.complete(REQUEST), collect(provider), provider.probe()):
        with pytest.raises(UpstreamError) as caught:
            await call
        assert caught.value.failure_class is FailureClass.CREDENTIAL
        assert "invalid_grant" in caught.value.message
    assert not fake_upstream.requests  # nothing reached Vertex without a token
    fake_upstream.oauth.refuse = ""
    await provider.complete(REQUEST)  # the next call tries again


async def test_a_key_the_token_endpoint_does_not_know_is_a_credential_failure(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    """Signed by another key: the fake checks the assertion's signature, as Google does."""
    other = TokenEndpoint(fake_upstream.oauth.token_uri)
    provider = make(credentials=other.key_file())
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(REQUEST)
    assert caught.value.failure_class is FailureClass.CREDENTIAL
    assert "Invalid JWT Signature" in caught.value.message
    assert other.private_key_pem() not in caught.value.message


@pytest.mark.parametrize(
    "credentials",
    ["", "not json", json.dumps({"type": "service_account", "private_key": "nope"})],
    ids=["none", "not-json", "broken-key"],
)
async def test_an_unusable_key_is_a_credential_failure(
    credentials: str, make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make(credentials=credentials)
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(REQUEST)
    assert caught.value.failure_class is FailureClass.CREDENTIAL
    assert "nope" not in caught.value.message
    assert fake_upstream.oauth.requests == 0 and not fake_upstream.requests


async def test_an_unreachable_token_endpoint_is_transient(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    key = json.loads(fake_upstream.service_account())
    key["token_uri"] = "http://127.0.0.1:9/token"  # nothing listens on the discard port
    provider = make(credentials=json.dumps(key))
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(REQUEST)
    assert caught.value.failure_class is FailureClass.TRANSIENT


async def test_a_caller_leaving_does_not_cancel_the_refresh_others_wait_for(
    make: Factory, fake_upstream: FakeUpstream
) -> None:
    provider = make()
    first = asyncio.create_task(provider.complete(REQUEST))
    second = asyncio.create_task(provider.complete(REQUEST))
    await asyncio.sleep(0)
    first.cancel()
    await second
    assert fake_upstream.oauth.requests == 1


# config ----------------------------------------------------------------------------------------


def vertex_config(**options: str) -> dict[str, object]:
    return {
        "providers": [{"name": "v", "type": "vertex", "models": {"*": "*"}, "options": options}],
        "default_model": "m",
        "auth": {"enabled": False},
    }


def problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        config.parse(data, {})
    return str(caught.value).splitlines()


def test_config_names_each_missing_option() -> None:
    assert problems(vertex_config(project="p")) == [
        "providers[0].options.location: required",
        "providers[0].options.credentials_file: required",
    ]
    data = vertex_config()
    del data["providers"][0]["options"]  # type: ignore[index]
    assert problems(data) == [
        "providers[0].options: vertex requires project, location, credentials_file"
    ]


def test_config_reads_the_key_file(tmp_path: pathlib.Path) -> None:
    endpoint = TokenEndpoint("https://oauth2.googleapis.com/token")
    path = tmp_path / "sa.json"
    path.write_text(endpoint.key_file())
    settings = config.parse(
        vertex_config(project="p", location="global", credentials_file=str(path)), {}
    )
    provider = settings.providers[0]
    assert provider.credentials.get_secret_value() == path.read_text()
    pem = endpoint.private_key_pem()
    assert pem not in repr(settings) and pem not in str(provider.model_dump())
    spec = spec_of(provider)
    assert spec.credentials == path.read_text() and pem not in repr(spec)
    secrets = file_secrets(spec.type, spec.credentials)
    assert pem in secrets and pem.replace("\n", "\\n") in secrets
    assert all(line in secrets for line in pem.splitlines()[1:-2])  # each full base64 line


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read"),
        ("{", "is not JSON"),
        ('{"type": "authorized_user"}', "is not a service-account key file"),
        ('{"type": "service_account", "client_email": "a@b"}', "has no private_key, token_uri"),
    ],
)
def test_config_names_an_unusable_key_file(
    content: str | None, problem: str, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "sa.json"
    if content is not None:
        path.write_text(content)
    lines = problems(vertex_config(project="p", location="l", credentials_file=str(path)))
    assert len(lines) == 1
    assert lines[0].startswith("providers[0].options.credentials_file: ")
    assert problem in lines[0]


def test_credentials_are_not_written_in_the_config() -> None:
    data = vertex_config(project="p", location="l", credentials_file="/nowhere.json")
    data["providers"][0]["credentials"] = "{...}"  # type: ignore[index]
    assert problems(data)[0].startswith("providers[0].credentials: keys are not written")


def test_spec_dataclass_hides_credentials() -> None:
    spec = ProviderSpec(name="v", type="vertex", credentials="SECRET-JSON")
    assert "SECRET-JSON" not in repr(spec)
    assert dataclasses.replace(spec).credentials == "SECRET-JSON"
