"""Config loading: env expansion, validation naming the exact key, the built-in default."""

from __future__ import annotations

import pathlib

import pytest

from hapaxd import config

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
    assert [[p.name for p, _ in rank] for rank in settings.routes_for("chat")] == [
        ["backup"],
        ["primary"],
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
    first_choice = settings.routes_for("default")[0][0]
    assert (first_choice[0].name, first_choice[1]) == ("openai", "gpt-4o-mini")
    assert settings.routes_for("gpt-4o")[0][0][1] == "gpt-4o"


def test_the_example_config_in_the_repo_is_valid() -> None:
    root = pathlib.Path(__file__).resolve().parents[2]
    env = {"OPENAI_API_KEY": "sk", "ANTHROPIC_API_KEY": "ak"}
    settings = config.load(str(root / "config" / "hapax.example.yaml"), env)
    assert settings.providers


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
    }
    with pytest.raises(config.ConfigError) as caught:
        config.parse(data, {})
    assert str(caught.value).startswith("providers[0].base_url: required for azure_openai")
