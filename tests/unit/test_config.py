"""Config loading: env expansion, validation naming the exact key, the built-in default."""

from __future__ import annotations

import pathlib

import pytest

from hapaxd import config
from hapaxd.config.provider_types import KIND, KINDS
from hapaxd.config.schema import DEFAULT_CAPABILITIES, OPTIONS
from hapaxd.core.routes import RouteTable
from hapaxd.core.types import VENDOR_WIRES
from hapaxd.core.validation import RESERVED_OPTIONS
from hapaxd.providers.local import LocalProvider
from hapaxd.providers.registry import spec_of

ROOT = pathlib.Path(__file__).resolve().parents[2]

GOOD = """
server:
  address: "127.0.0.1:${GRPC_PORT:-50051}"
providers:
  - name: primary
    type: openai
    base_url: ${OPENAI_BASE_URL}
    api_key_env: MY_OPENAI_KEY
    models: {chat: gpt-4o-mini}
    timeouts: {connect: 500ms, first_byte: 10s, idle: 1m}
  - name: backup
    type: anthropic
    api_key_env: MY_ANTHROPIC_KEY
    models: {chat: claude-haiku-4-5}
provider_preference: [backup, primary]
default_model: chat
auth: {enabled: false}
circuit_breaker: {failure_threshold: 3, timeout: 20s}
logging: {level: debug, format: text}
"""
ENV = {
    "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
    "MY_OPENAI_KEY": "sk-1",
    "MY_ANTHROPIC_KEY": "ak-2",
}


def write(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "hapax.yaml"
    path.write_text(text)
    return str(path)


def test_a_good_file_loads_with_env_expansion_and_durations(tmp_path: pathlib.Path) -> None:
    settings = config.load(write(tmp_path, GOOD), ENV)
    assert settings.server.address == "127.0.0.1:50051"
    primary = settings.providers[0]
    assert primary.base_url == "http://127.0.0.1:8000/v1"
    assert primary.api_key.get_secret_value() == "sk-1"
    assert "sk-1" not in repr(settings)
    assert (primary.timeouts.connect, primary.timeouts.idle) == (0.5, 60.0)
    assert RouteTable(settings).ranks("chat") == [
        [("backup", "claude-haiku-4-5")],
        [("primary", "gpt-4o-mini")],
    ]
    assert settings.circuit_breaker.timeout == 20.0
    assert config.load(write(tmp_path, GOOD), {**ENV, "GRPC_PORT": "6000"}).server.address == (
        "127.0.0.1:6000"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"OPENAI_BASE_URL": "nope"}, "providers[0].base_url: not a URL"),
        (
            {"OPENAI_BASE_URL": None},
            "providers[0].base_url: environment variable OPENAI_BASE_URL is not set",
        ),
        (
            {"MY_ANTHROPIC_KEY": None},
            "providers[1].api_key_env: environment variable MY_ANTHROPIC_KEY is not set",
        ),
    ],
)
def test_env_problems_name_the_key(
    tmp_path: pathlib.Path, change: dict[str, str | None], message: str
) -> None:
    env = {k: v for k, v in {**ENV, **change}.items() if v is not None}
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, GOOD), env)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("type: anthropic", "type: antropic"), "providers[1].type: Input should be"),
        (
            ("timeouts: {connect: 500ms", "timeouts: {connect: soon"),
            "providers[0].timeouts.connect: not a duration",
        ),
        (
            ("provider_preference: [backup, primary]", "provider_preference: [backup, nobody]"),
            "provider_preference[1]: unknown provider 'nobody'",
        ),
        (("default_model: chat", "default_model: other"), "default_model: no provider serves"),
        (
            ("failure_threshold: 3", "failure_threshold: 0"),
            "circuit_breaker.failure_threshold: Input should be greater than or equal",
        ),
        (("logging: {level: debug", "logging: {levle: debug"), "logging.levle: unknown key"),
        (("127.0.0.1:${GRPC_PORT:-50051}", "localhost"), "server.address: not a host:port"),
        (("name: backup", "name: primary"), "providers[1].name: duplicate provider name"),
    ],
)
def test_a_bad_file_stops_with_the_exact_key_and_why(
    tmp_path: pathlib.Path, edit: tuple[str, str], message: str
) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, GOOD.replace(*edit)), ENV)
    assert str(caught.value).startswith(message), str(caught.value)


def test_keys_written_in_the_file_are_refused(tmp_path: pathlib.Path) -> None:
    text = GOOD.replace("api_key_env: MY_OPENAI_KEY", "api_key: sk-live")
    with pytest.raises(config.ConfigError, match=r"providers\[0\].api_key: keys are not written"):
        config.load(write(tmp_path, text), ENV)


def test_not_yaml_and_missing_file_are_reported(tmp_path: pathlib.Path) -> None:
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(write(tmp_path, "providers: [\n"), {})
    with pytest.raises(config.ConfigError, match="No such file"):
        config.load(str(tmp_path / "missing.yaml"), {})


def test_built_in_default_serves_local_only_without_keys() -> None:
    settings = config.default_settings({})
    assert [(p.name, p.type) for p in settings.providers] == [("local", "local")]
    assert settings.default_model == "default"
    assert settings.server.address.endswith(":50051")
    assert settings.metrics.address.endswith(":9090")


def test_built_in_default_adds_providers_found_in_the_environment() -> None:
    settings = config.default_settings(
        {"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "ak-y", "OLLAMA_HOST": "127.0.0.1:11434"}
    )
    assert [p.name for p in settings.providers] == ["openai", "anthropic", "ollama", "local"]
    assert settings.providers[2].base_url == "http://127.0.0.1:11434"
    routes = RouteTable(settings)
    assert routes.ranks("default")[0][0] == ("openai", "gpt-4o-mini")
    assert routes.ranks("gpt-4o")[0][0][1] == "gpt-4o"


def test_the_example_config_in_the_repo_is_valid() -> None:
    root = pathlib.Path(__file__).resolve().parents[2]
    env = {"OPENAI_API_KEY": "sk", "ANTHROPIC_API_KEY": "ak", "HAPAX_OPS_KEY": "ops-key"}
    settings = config.load(str(root / "config" / "hapax.example.yaml"), env)
    assert settings.providers
    assert [k.id for k in settings.auth.keys if k.admin] == ["ops"]
    assert settings.auth.keys[1].sha256 == config.digest("ops-key")


def test_built_in_default_addresses_can_be_moved_by_environment() -> None:
    settings = config.default_settings(
        {"HAPAX_GRPC_ADDRESS": "127.0.0.1:7000", "HAPAX_METRICS_ADDRESS": "127.0.0.1:7001"}
    )
    assert (settings.server.address, settings.metrics.address) == (
        "127.0.0.1:7000",
        "127.0.0.1:7001",
    )


def test_azure_without_its_resource_url_is_a_config_error() -> None:
    data = {
        "providers": [{"name": "az", "type": "azure_openai", "models": {"m": "m"}}],
        "default_model": "m",
        "auth": {"enabled": False},
    }
    with pytest.raises(config.ConfigError) as caught:
        config.parse(data, {})
    assert str(caught.value).startswith("providers[0].base_url: required for azure_openai")


# --- provider types and vendor options ---------------------------------------------------------


def test_every_provider_type_has_one_vendor_option_schema() -> None:
    assert set(config.PROVIDER_TYPES) == {
        *("local", "openai", "azure_openai", "anthropic", "ollama", "gemini", "vertex"),
        "bedrock",
    }
    assert len(set(config.PROVIDER_TYPES)) == len(config.PROVIDER_TYPES)
    assert list(OPTIONS) == list(config.PROVIDER_TYPES)


def test_a_provider_type_is_one_of_provider_types_and_nothing_else() -> None:
    assert config.ProviderSettings.model_fields["type"].annotation == config.ProviderType
    vertex = {"project": "p", "location": "us-central1", "credentials_file": "/k.json"}
    for kind in config.PROVIDER_TYPES:
        options = {"vertex": vertex, "bedrock": {"region": "us-east-1"}}.get(kind, {})
        config.ProviderSettings(
            name="p", type=kind, base_url="https://r.openai.azure.com", options=options
        )
    with pytest.raises(config.ConfigError) as caught:
        config.parse({"providers": [{"name": "l", "type": "nope"}], "default_model": "m"}, {})
    assert str(caught.value).startswith(
        "providers[0].type: Input should be 'local', 'openai', 'azure_openai', 'anthropic', "
        "'ollama', 'gemini', 'vertex' or 'bedrock'"
    )


def test_what_each_type_declares_reaches_config_and_validation() -> None:
    """provider_types.KINDS is the one declaration; the lists read from it keep their values."""
    assert [k.name for k in KINDS] == list(config.PROVIDER_TYPES)
    assert [k.options for k in KINDS] == list(OPTIONS.values())
    assert DEFAULT_CAPABILITIES["anthropic"] == ("streaming", "tools", "images", "json_schema")
    assert DEFAULT_CAPABILITIES["ollama"] == DEFAULT_CAPABILITIES["openai"]
    # Ollama takes inline images only; Bedrock inline or s3:// objects; Vertex https or gs://.
    assert {k: kind.image_url_schemes for k, kind in KIND.items()} == {
        "local": ("https",),
        "openai": ("https",),
        "azure_openai": ("https",),
        "anthropic": ("https",),
        "ollama": (),
        "gemini": ("https",),
        "vertex": ("https", "gs"),
        "bedrock": ("s3",),
    }
    assert VENDOR_WIRES == {
        "openai": ("openai", "azure_openai"),
        "anthropic": ("anthropic",),
        "ollama": ("ollama",),
        "gemini": ("gemini", "vertex"),
        "bedrock": ("bedrock",),
    }
    assert DEFAULT_CAPABILITIES["gemini"] == DEFAULT_CAPABILITIES["openai"]
    assert DEFAULT_CAPABILITIES["vertex"] == DEFAULT_CAPABILITIES["gemini"]
    assert RESERVED_OPTIONS == {
        *("model", "messages", "stream", "stream_options", "system", "tools", "tool_choice"),
        *("parallel_tool_calls", "response_format", "format", "max_tokens"),
        *("max_completion_tokens", "options", "input"),
        *("contents", "systemInstruction", "toolConfig", "generationConfig"),
        *("inferenceConfig", "additionalModelRequestFields"),
    }


def local_with(options: object) -> dict[str, object]:
    return {
        "providers": [{"name": "l", "type": "local", "models": {"*": "local"}, "options": options}],
        "default_model": "m",
        "auth": {"enabled": False},
    }


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("0.3s", "0.3"), ("300ms", "0.3"), (0.3, "0.3"), ("0", "0.0"), (0, "0.0"), ("2m", "120.0")],
)
def test_local_chunk_delay_is_a_duration_normalised_to_seconds(
    written: object, seconds: str
) -> None:
    settings = config.parse(local_with({"chunk_delay": written}), {})
    spec = spec_of(settings.providers[0])
    assert dict(spec.options) == {"chunk_delay": seconds}
    LocalProvider(spec)  # "0.3s" used to pass check-config and then crash serve here


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("local", {"foo": "1"}, "providers[0].options.foo: unknown option for type local"),
        ("local", {"chunk_delay": "soon"}, "providers[0].options.chunk_delay: not a duration"),
        ("local", {"chunk_delay": -1}, "providers[0].options.chunk_delay: Input should be greater"),
        ("openai", {"deployment": "x"}, "providers[0].options.deployment: unknown option for type"),
        ("openai", {"max_tokens_field": "tokens"}, "providers[0].options.max_tokens_field: Input"),
        ("anthropic", {"default_max_tokens": "0"}, "providers[0].options.default_max_tokens: In"),
        ("anthropic", {"anthropic_version": ""}, "providers[0].options.anthropic_version: String"),
        ("ollama", {"num_ctx": 8}, "providers[0].options.num_ctx: unknown option for type ollama"),
        ("gemini", {"api_version": "v1"}, "providers[0].options.api_version: unknown option for"),
        ("vertex", {}, "providers[0].options.project: required"),
        ("vertex", {"region": "x", "project": "p"}, "providers[0].options.region: unknown option"),
        ("bedrock", {}, "providers[0].options.region: required"),
        ("bedrock", {"region": "us-east-1", "access_key": "x"}, "providers[0].options.access_key:"),
        ("local", ["chunk_delay"], "providers[0].options: not a mapping"),
    ],
)
def test_vendor_options_are_checked_against_their_type(
    kind: str, options: object, message: str
) -> None:
    data = local_with(options)
    data["providers"][0]["type"] = kind  # type: ignore[index]
    with pytest.raises(config.ConfigError) as caught:
        config.parse(data, {})
    assert str(caught.value).startswith(message), str(caught.value)


def test_every_bad_vendor_option_is_named_in_file_order() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse(local_with({"chunk_delay": "soon", "foo": 1, "bar": 2}), {})
    assert [line.split(":")[0] for line in str(caught.value).splitlines()] == [
        "providers[0].options.chunk_delay",
        "providers[0].options.foo",
        "providers[0].options.bar",
    ]


def test_known_vendor_options_reach_the_adapter_as_text(tmp_path: pathlib.Path) -> None:
    text = """
providers:
  - name: claude
    type: anthropic
    models: {"*": "*"}
    options: {anthropic_version: 2023-06-01, default_max_tokens: 333}
  - name: az
    type: azure_openai
    base_url: https://r.openai.azure.com
    models: {"*": "*"}
    options: {api_version: 2024-10-21, deployment: gpt4o, max_tokens_field: max_completion_tokens}
  - name: o
    type: openai
    models: {"*": "*"}
default_model: m
auth: {enabled: false}
"""
    providers = config.load(write(tmp_path, text), {}).providers
    assert [dict(spec_of(p).options) for p in providers] == [
        {"anthropic_version": "2023-06-01", "default_max_tokens": "333"},
        {
            "api_version": "2024-10-21",
            "deployment": "gpt4o",
            "max_tokens_field": "max_completion_tokens",
        },
        {},  # nothing given: each adapter keeps its own defaults
    ]


# --- every problem at once ---------------------------------------------------------------------


def test_every_problem_is_reported_at_once_one_line_each(tmp_path: pathlib.Path) -> None:
    text = (
        GOOD.replace("type: anthropic", "type: anthropic\n    options: {chunk_delay: 1s}")
        .replace("provider_preference: [backup, primary]", "provider_preference: [backup, nobody]")
        .replace("logging: {level: debug", "logging: {level: loud")
    )
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, text), {"MY_OPENAI_KEY": "sk-1"})
    assert str(caught.value).splitlines() == [
        "providers[0].base_url: environment variable OPENAI_BASE_URL is not set",
        "providers[1].api_key_env: environment variable MY_ANTHROPIC_KEY is not set",
        "logging.level: Input should be 'debug', 'info', 'warning' or 'error'",
        "providers[1].options.chunk_delay: unknown option for type anthropic",
        "provider_preference[1]: unknown provider 'nobody'",
    ]


def test_every_cross_field_problem_is_reported_at_once() -> None:
    data = {
        "providers": [
            {"name": "a", "type": "local", "models": {"chat": "x"}},
            {"name": "a", "type": "local", "models": {"chat": "x"}},
            {"name": "b", "type": "local", "models": {"other": "x"}},
        ],
        "provider_preference": ["a", "ghost", ["b", "spook"]],
        "models": {"chat": {"provider_preference": ["b"]}},
        "default_model": "chat",
        "auth": {"enabled": False},
    }
    with pytest.raises(config.ConfigError) as caught:
        config.parse(data, {})
    assert str(caught.value).splitlines() == [
        "providers[1].name: duplicate provider name 'a'",
        # chat has its own list, so the global one routes only `other`, which a does not serve
        "provider_preference[0]: provider 'a' serves none of the models this list routes (other)",
        "provider_preference[1]: unknown provider 'ghost'",
        "provider_preference[2][1]: unknown provider 'spook'",
        "models.chat.provider_preference[0]: provider 'b' does not serve model 'chat'",
        "default_model: no provider serves 'chat'",
    ]


# --- a preference names providers that serve the model -------------------------------------------

SERVED = {
    "providers": [
        {"name": "openai", "type": "openai", "models": {"chat": "gpt-4o-mini"}},
        {"name": "anthropic", "type": "anthropic", "models": {"summary": "claude-haiku-4-5"}},
        {"name": "local", "type": "local", "models": {"*": "local"}},
    ],
    "default_model": "chat",
    "auth": {"enabled": False},
}


def test_a_model_preference_naming_a_provider_that_does_not_serve_it_is_refused() -> None:
    data = {**SERVED, "models": {"chat": {"provider_preference": ["openai", "anthropic"]}}}
    with pytest.raises(config.ConfigError) as caught:
        config.parse(data, {})
    assert str(caught.value) == (
        "models.chat.provider_preference[1]: provider 'anthropic' does not serve model 'chat'"
    )


def test_a_global_preference_naming_a_provider_that_serves_none_of_its_models_is_refused() -> None:
    data = {
        **SERVED,
        "providers": [*SERVED["providers"], {"name": "idle", "type": "local"}],  # type: ignore[list-item]
        "provider_preference": ["openai", "anthropic", ["local", "idle"]],
    }
    with pytest.raises(config.ConfigError) as caught:
        config.parse(data, {})
    assert str(caught.value) == (
        "provider_preference[2][1]: provider 'idle' serves none of the models this list routes "
        "(chat, summary)"
    )


def test_a_global_preference_may_list_providers_that_serve_some_of_its_models() -> None:
    # anthropic serves only summary, openai only chat: each is useful to the global list.
    settings = config.parse({**SERVED, "provider_preference": ["anthropic", "openai"]}, {})
    routes = RouteTable(settings)
    assert [[name for name, _ in rank] for rank in routes.ranks("chat")] == [["openai"]]
    assert [[name for name, _ in rank] for rank in routes.ranks("summary")] == [["anthropic"]]


def test_a_global_preference_only_routes_models_without_a_list_of_their_own() -> None:
    data = {
        **SERVED,
        "provider_preference": ["anthropic", "local"],
        "models": {"summary": {"provider_preference": ["anthropic"]}},
    }
    with pytest.raises(
        config.ConfigError, match=r"^provider_preference\[0\]: provider 'anthropic'"
    ):
        config.parse(data, {})


# --- checking without the secrets ----------------------------------------------------------------


def test_secrets_false_checks_everything_but_the_secret_environment_variables(
    tmp_path: pathlib.Path,
) -> None:
    path = write(tmp_path, GOOD)
    settings = config.load(path, {"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"}, secrets=False)
    assert settings.secret_env() == [
        ("providers[0].api_key_env", "MY_OPENAI_KEY"),
        ("providers[1].api_key_env", "MY_ANTHROPIC_KEY"),
    ]
    assert settings.providers[0].api_key.get_secret_value() == ""
    with pytest.raises(config.ConfigError) as caught:  # ${VAR} in other keys is still checked
        config.load(path, {}, secrets=False)
    assert (
        str(caught.value)
        == "providers[0].base_url: environment variable OPENAI_BASE_URL is not set"
    )
    keyed = GOOD.replace("api_key_env: MY_OPENAI_KEY", "api_key: sk-live")
    with pytest.raises(config.ConfigError, match=r"providers\[0\].api_key: keys are not written"):
        config.load(write(tmp_path, keyed), ENV, secrets=False)


def test_the_example_config_checks_without_its_secrets() -> None:
    settings = config.load(str(ROOT / "config" / "hapax.example.yaml"), {}, secrets=False)
    assert [env for _, env in settings.secret_env()] == [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "HAPAX_OPS_KEY",
    ]
    assert settings.auth.keys[1].sha256 == ""  # unchecked: it matches no key


def test_the_local_config_in_the_repo_loads_with_an_empty_environment() -> None:
    settings = config.load(str(ROOT / "config" / "hapax.local.yaml"), {})
    assert {p.type for p in settings.providers} == {"local"}
    assert settings.secret_env() == []
    assert {"chat", "fast"} <= set(settings.models)
    assert RouteTable(settings).ranks(settings.default_model)


def test_the_redis_passwords_of_rate_limits_and_budgets_come_from_their_variables() -> None:
    data = {
        **SERVED,
        "auth": {"keys": [{"id": "k", "sha256": "a" * 64}]},
        "rate_limit": {
            "backend": "redis",
            "redis_url": "redis://r:6379/0",
            "redis_password_env": "RL_PASSWORD",
        },
        "budgets": {
            "backend": "redis",
            "redis_url": "redis://r:6379/1",
            "redis_password_env": "BUDGET_PASSWORD",
        },
    }
    settings = config.parse(data, {"RL_PASSWORD": "one", "BUDGET_PASSWORD": "two"})
    assert settings.rate_limit.redis_password.get_secret_value() == "one"
    assert settings.budgets.redis_password.get_secret_value() == "two"
    assert "two" not in repr(settings.budgets)
    assert ("budgets.redis_password_env", "BUDGET_PASSWORD") in settings.secret_env()
    with pytest.raises(config.ConfigError, match="no password in the URL"):
        config.parse({**data, "budgets": {"redis_url": "redis://:pw@r:6379/1"}}, {})
