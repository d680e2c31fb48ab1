"""The `hapaxd` command as an operator runs it: check-config, healthcheck and serve, each as a real
subprocess of the installed console script. Subprocesses that talk to a gateway in this event
loop are asyncio subprocesses, so the loop keeps serving while they run."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pathlib
import signal
import socket
import subprocess
import textwrap
import time

import grpc
import pytest

from hapax.v1 import completion_service_pb2, completion_service_pb2_grpc
from tests.conftest import Gateway
from tests.fakes.upstream.oauth import TokenEndpoint
from tests.support.processes import HAPAXD, GatewayProcess, free_port, run

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "config"

GOOD = """\
server:
  address: 127.0.0.1:50051
  grace_period: 1s
metrics:
  enabled: false
logging:
  level: info
  format: text
providers:
  - name: local
    type: local
    models: {"*": local}
  - name: ollama
    type: ollama
    base_url: http://127.0.0.1:11434
    models: {llama: llama3.2}
default_model: default
auth: {enabled: false}
health_check:
  enabled: false
"""


def write(tmp_path: pathlib.Path, text: str, name: str = "hapax.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def hapaxd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`hapaxd ARGS` run to its end; `env` is its whole environment (default: this one's)."""
    return subprocess.run(
        [*HAPAXD, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )


def check_config(path: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return hapaxd("check-config", path, env={**os.environ, **(env or {})})


def without(*names: str) -> dict[str, str]:
    """This process's environment minus the named variables."""
    return {k: v for k, v in os.environ.items() if k not in names}


async def run_cli(*args: str, within: float = 30.0) -> tuple[int, str, str]:
    return await run(*HAPAXD, *args, within=within)


# --- check-config ------------------------------------------------------------------------------


def test_check_config_accepts_a_good_file(tmp_path: pathlib.Path) -> None:
    result = check_config(write(tmp_path, GOOD))
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout
    assert "local (local), ollama (ollama)" in result.stdout


def test_check_config_says_where_usage_is_kept_and_what_budgets_can_promise(
    tmp_path: pathlib.Path,
) -> None:
    budgets = (
        "auth:\n  keys:\n    - {id: search, sha256: " + "a" * 64 + "}\n"
        "budgets:\n  limits:\n    - {name: search-daily, key: search, money: 5, window: day}\n"
        "ledger: {enabled: false}\n"
    )
    result = check_config(write(tmp_path, GOOD + budgets))
    assert result.returncode == 0, result.stderr
    assert "usage ledger: off" in result.stdout
    assert "budgets: search-daily" in result.stdout
    assert "start from zero at every restart" in result.stdout
    assert "replicas each keep their own" in result.stdout
    shared = budgets.replace(
        "budgets:\n", "budgets:\n  backend: redis\n  redis_url: redis://127.0.0.1:6390/0\n"
    ).replace("ledger: {enabled: false}\n", "")
    result = check_config(write(tmp_path, GOOD + shared))
    assert result.returncode == 0, result.stderr
    assert "shared by every replica in Redis at redis://127.0.0.1:6390/0" in result.stdout
    assert "refused (on_store_error: closed)" in result.stdout
    assert "this replica's own ledger only" in result.stdout
    assert "replicas each keep their own" not in result.stdout
    kept = check_config(write(tmp_path, GOOD), env={"HAPAX_STATE_DIR": str(tmp_path / "state")})
    assert f"usage ledger: {tmp_path / 'state' / 'usage.db'}" in kept.stdout


def test_check_config_names_the_bad_key_and_exits_2(tmp_path: pathlib.Path) -> None:
    result = check_config(write(tmp_path, GOOD.replace("http://127.0.0.1:11434", "nope")))
    assert result.returncode == 2
    assert "providers[1].base_url: not a URL" in result.stderr


def test_check_config_names_what_a_vertex_provider_lacks(tmp_path: pathlib.Path) -> None:
    vertex = GOOD.replace(
        "providers:\n",
        "providers:\n  - name: vertex\n    type: vertex\n    models: {gemini: gemini-2.5-flash}\n"
        "    options: {project: my-project}\n",
    )
    result = check_config(write(tmp_path, vertex))
    assert result.returncode == 2
    assert "providers[0].options.location: required" in result.stderr
    assert "providers[0].options.credentials_file: required" in result.stderr
    missing = vertex.replace(
        "{project: my-project}",
        f"{{project: my-project, location: global, credentials_file: {tmp_path / 'sa.json'}}}",
    )
    result = check_config(write(tmp_path, missing))
    assert result.returncode == 2
    assert "providers[0].options.credentials_file: cannot read" in result.stderr


def test_check_config_rejects_a_file_that_is_not_there(tmp_path: pathlib.Path) -> None:
    result = check_config(str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "missing.yaml" in result.stderr


def test_check_config_expands_environment_variables(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        """\
        metrics: {enabled: false}
        providers:
          - name: ${HAPAX_TEST_PROVIDER}
            type: local
            models: {"*": local}
        default_model: ${HAPAX_TEST_MODEL:-fallback-model}
        auth: {enabled: false}
        """,
    )
    env = {"HAPAX_TEST_PROVIDER": "from-env"}
    result = check_config(path, env)
    assert result.returncode == 0, result.stderr
    assert "providers from-env (local); default model fallback-model" in result.stdout

    result = check_config(path, {**env, "HAPAX_TEST_MODEL": "chosen"})
    assert result.returncode == 0, result.stderr
    assert "default model chosen" in result.stdout

    unset = {k: v for k, v in os.environ.items() if k != "HAPAX_TEST_PROVIDER"}
    result = subprocess.run(
        [*HAPAXD, "check-config", path],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=unset,
        check=False,
    )
    assert result.returncode == 2
    assert "environment variable HAPAX_TEST_PROVIDER is not set" in result.stderr


def test_check_config_reports_every_bad_key_at_once(tmp_path: pathlib.Path) -> None:
    text = (
        GOOD.replace("http://127.0.0.1:11434", "nope")
        .replace(
            "models: {llama: llama3.2}", "models: {llama: llama3.2}\n    api_key_env: HAPAX_NO_KEY"
        )
        .replace("type: local\n", "type: local\n    options: {chunk_delay: soon, speed: 2}\n")
        .replace("level: info", "level: loud")
    )
    result = hapaxd("check-config", write(tmp_path, text), env=without("HAPAX_NO_KEY"))
    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == [
        "providers[1].api_key_env: environment variable HAPAX_NO_KEY is not set",
        "logging.level: Input should be 'debug', 'info', 'warning' or 'error'",
        "providers[0].options.chunk_delay: not a duration (use seconds or e.g. 500ms, 30s, 2m)",
        "providers[0].options.speed: unknown option for type local",
        "providers[1].base_url: not a URL",
    ]


def test_check_config_refuses_a_preference_naming_a_provider_that_does_not_serve_the_model(
    tmp_path: pathlib.Path,
) -> None:
    text = (
        GOOD
        + "models:\n  llama:\n    provider_preference: [ollama, local]\n  chat:\n"
        + ("    provider_preference: [local, ollama]\n")
    )
    result = check_config(write(tmp_path, text))
    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == [
        "models.chat.provider_preference[1]: provider 'ollama' does not serve model 'chat'"
    ]


def test_check_config_no_secrets_checks_the_example_and_names_the_secrets_it_needs() -> None:
    example = str(CONFIG_DIR / "hapax.example.yaml")
    env = without("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HAPAX_OPS_KEY")
    refused = hapaxd("check-config", example, env=env)
    assert refused.returncode == 2
    assert "environment variable OPENAI_API_KEY is not set" in refused.stderr

    result = hapaxd("check-config", "--no-secrets", example, env=env)
    assert result.returncode == 0, result.stderr
    assert "config OK: providers openai (openai), anthropic (anthropic), local (local)" in (
        result.stdout
    )
    assert (
        "secrets not checked; serving needs: OPENAI_API_KEY (providers[0].api_key_env, not set), "
        "ANTHROPIC_API_KEY (providers[1].api_key_env, not set), "
        "HAPAX_OPS_KEY (auth.keys[1].key_env, not set)"
    ) in result.stdout
    assert "auth: 2 keys (team-search, ops); reflection open, admin service admin" in result.stdout


def test_check_config_names_the_gemini_key_the_uncommented_example_needs(
    tmp_path: pathlib.Path,
) -> None:
    """The example's commented gemini entry, uncommented, is a valid provider whose missing
    key check-config names like the others'."""
    text = (CONFIG_DIR / "hapax.example.yaml").read_text()
    start = text.index("  # - name: gemini")
    end = text.index("  # - name: vertex")
    entry = "".join(line.replace("# ", "", 1) + "\n" for line in text[start:end].splitlines())
    path = tmp_path / "hapax.yaml"
    path.write_text(text[:start] + entry + text[end:])
    env = without("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "HAPAX_OPS_KEY")
    refused = hapaxd("check-config", str(path), env=env)
    assert refused.returncode == 2
    assert "providers[2].api_key_env: environment variable GEMINI_API_KEY is not set" in (
        refused.stderr
    )
    result = hapaxd("check-config", "--no-secrets", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert "gemini (gemini)" in result.stdout
    assert "GEMINI_API_KEY (providers[2].api_key_env, not set)" in result.stdout


def test_check_config_reads_the_key_file_the_uncommented_vertex_example_names(
    tmp_path: pathlib.Path,
) -> None:
    text = (CONFIG_DIR / "hapax.example.yaml").read_text()
    start = text.index("  # - name: vertex")
    end = text.index("  - name: local")
    entry = "".join(line.replace("# ", "", 1) + "\n" for line in text[start:end].splitlines())
    path = tmp_path / "hapax.yaml"
    path.write_text(text[:start] + entry + text[end:])
    env = {
        **without("GOOGLE_APPLICATION_CREDENTIALS"),
        "OPENAI_API_KEY": "sk-x",
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "HAPAX_OPS_KEY": "ops-key",
    }
    refused = hapaxd("check-config", str(path), env=env)
    assert refused.returncode == 2
    assert "GOOGLE_APPLICATION_CREDENTIALS is not set" in refused.stderr
    key_file = tmp_path / "sa.json"
    key_file.write_text(TokenEndpoint("https://oauth2.googleapis.com/token").key_file())
    result = hapaxd(
        "check-config", str(path), env={**env, "GOOGLE_APPLICATION_CREDENTIALS": str(key_file)}
    )
    assert result.returncode == 0, result.stderr
    assert "vertex (vertex)" in result.stdout
    assert "PRIVATE KEY" not in result.stdout + result.stderr


def test_check_config_no_secrets_still_reports_everything_else(tmp_path: pathlib.Path) -> None:
    text = GOOD.replace(
        "models: {llama: llama3.2}", "models: {llama: llama3.2}\n    api_key_env: K"
    )
    result = hapaxd("check-config", "--no-secrets", write(tmp_path, text.replace("1s", "1 sec")))
    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == [
        "server.grace_period: not a duration (use seconds or e.g. 500ms, 30s, 2m)"
    ]


def test_check_config_accepts_the_local_example_with_no_keys() -> None:
    env = without(
        "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HAPAX_GRPC_ADDRESS", "HAPAX_METRICS_ADDRESS"
    )
    result = hapaxd("check-config", str(CONFIG_DIR / "hapax.local.yaml"), env=env)
    assert result.returncode == 0, result.stderr
    assert "config OK: providers local (local), local-slow (local); default model chat" in (
        result.stdout
    )


def test_version_prints_the_installed_distribution_version() -> None:
    from importlib import metadata

    result = hapaxd("--version")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"hapaxd {metadata.version('hapax-gateway')}\n"


# --- healthcheck -------------------------------------------------------------------------------


async def test_healthcheck_against_a_running_gateway_prints_serving(gateway: Gateway) -> None:
    code, out, err = await run_cli("healthcheck", gateway.address)
    assert code == 0, err
    assert out.strip() == "SERVING"


async def test_healthcheck_against_a_closed_port_exits_1() -> None:
    code, out, err = await run_cli("healthcheck", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == 1
    assert "SERVING" not in out
    assert "unhealthy" in err


# --- serve -------------------------------------------------------------------------------------


async def test_serve_starts_answers_health_and_exits_0_on_sigterm(tmp_path: pathlib.Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = write(tmp_path, GOOD.replace("127.0.0.1:50051", address))
    log_path = tmp_path / "hapaxd.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *HAPAXD,
            "serve",
            "--config",
            config,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await GatewayProcess(proc, address, log_path).wait_serving(30)
        code, out, err = await run_cli("healthcheck", address)
        assert (code, out.strip()) == (0, "SERVING"), err

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(proc.wait(), 15)
        elapsed = time.monotonic() - started
        assert returncode == 0, log_path.read_text()
        assert elapsed < 10, f"took {elapsed:.1f}s to stop after SIGTERM"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_on_the_built_in_default_logs_its_providers_and_never_the_key() -> None:
    address = f"127.0.0.1:{free_port()}"
    key = "sk-cli-test-key-never-logged-0123"
    env = {
        **os.environ,
        "OPENAI_API_KEY": key,
        "HAPAX_GRPC_ADDRESS": address,
        "HAPAX_METRICS_ADDRESS": "127.0.0.1:0",
    }
    env.pop("HAPAX_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        *HAPAXD,
        "serve",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await GatewayProcess(proc, address).wait_serving(30)
        proc.send_signal(signal.SIGTERM)
        output = (await asyncio.wait_for(proc.communicate(), 15))[0].decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "from providers: openai (openai), local (local)" in output
    assert "authentication is off (auth.enabled: false)" in output
    assert key not in output


async def test_serve_runs_the_local_example_config_as_is(tmp_path: pathlib.Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **without("OPENAI_API_KEY", "ANTHROPIC_API_KEY"),
        "HAPAX_GRPC_ADDRESS": address,
        "HAPAX_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    log_path = tmp_path / "hapaxd.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *HAPAXD,
            "serve",
            "--config",
            str(CONFIG_DIR / "hapax.local.yaml"),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    gateway = GatewayProcess(proc, address, log_path)
    try:
        await gateway.wait_serving()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = completion_service_pb2_grpc.CompletionServiceStub(channel)
            replies = [
                r
                async for r in stub.StreamComplete(
                    completion_service_pb2.StreamCompleteRequest(prompt="hi"), timeout=10
                )
            ]
        assert "local provider" in "".join(r.delta for r in replies)
        assert replies[-1].route.provider == "local"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0, gateway.output()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("busy", ["server", "metrics"])
async def test_serve_on_a_port_in_use_prints_one_line_and_exits_2(
    tmp_path: pathlib.Path, busy: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addresses = {"server": f"127.0.0.1:{free_port()}", "metrics": f"127.0.0.1:{free_port()}"}
        addresses[busy] = f"127.0.0.1:{taken.getsockname()[1]}"
        text = GOOD.replace("127.0.0.1:50051", addresses["server"]).replace(
            "metrics:\n  enabled: false", f"metrics:\n  address: {addresses['metrics']}"
        )
        code, _, err = await run_cli("serve", "--config", write(tmp_path, text))
    assert code == 2, err
    assert "Traceback" not in err and "Exception" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("hapaxd:")]
    assert lines == [f"hapaxd: cannot listen on {addresses[busy]}: address already in use"], err


# --- hash-key ----------------------------------------------------------------------------------


def test_hash_key_prints_a_config_entry_and_the_new_key_once_apart(tmp_path: pathlib.Path) -> None:
    made = hapaxd("hash-key", "--id", "team-a", "--owner", "search")
    assert made.returncode == 0, made.stderr
    key = made.stderr.splitlines()[-1]
    assert key.startswith("hpx_") and len(key) >= 40
    assert key not in made.stdout, "the key stays out of what is redirected into a file"
    assert made.stdout.splitlines() == [
        "  - id: team-a",
        "    owner: search",
        f"    sha256: {hashlib.sha256(key.encode()).hexdigest()}",
    ]
    again = hapaxd("hash-key", "--id", "team-a")
    assert again.stderr.splitlines()[-1] != key, "a fresh random key each time"
    # The entry is the config line: pasted under auth.keys, it loads.
    text = GOOD.replace(
        "default_model: default\nauth: {enabled: false}\n",
        "default_model: default\nauth:\n  keys:\n" + made.stdout,
    )
    result = check_config(write(tmp_path, text))
    assert result.returncode == 0, result.stderr
    assert "auth: 1 keys (team-a)" in result.stdout


def test_hash_key_hashes_a_key_given_on_stdin() -> None:
    result = subprocess.run(
        [*HAPAXD, "hash-key", "--id", "ci", "--stdin"],
        input="hpx_existing\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.splitlines()[-1]
        == f"    sha256: {hashlib.sha256(b'hpx_existing').hexdigest()}"
    )
    assert "hpx_existing" not in result.stdout + result.stderr
    assert hapaxd("hash-key", "--id", "bad id").returncode == 2


def test_a_file_with_auth_on_and_no_keys_is_refused(tmp_path: pathlib.Path) -> None:
    text = GOOD.replace("auth: {enabled: false}\n", "")
    result = check_config(write(tmp_path, text))
    assert result.returncode == 2
    assert "auth.keys: no API keys while auth is enabled" in result.stderr


def test_check_config_names_what_a_bedrock_provider_lacks_and_its_credentials(
    tmp_path: pathlib.Path,
) -> None:
    bedrock = GOOD.replace(
        "providers:\n",
        "providers:\n  - name: bedrock\n    type: bedrock\n"
        "    models: {chat: anthropic.claude-3-haiku-20240307-v1:0}\n",
    )
    result = check_config(write(tmp_path, bedrock))
    assert result.returncode == 2
    assert "providers[0].options: bedrock requires region" in result.stderr
    good = bedrock.replace(
        "    models: {chat:", "    options: {region: us-east-1}\n    models: {chat:"
    )
    nowhere = {
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    aws_vars = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    env = {**without(*aws_vars), **nowhere}
    none = hapaxd("check-config", write(tmp_path, good), env=env)
    assert none.returncode == 0, none.stderr
    assert "bedrock (bedrock (bedrock))" not in none.stdout
    assert "warning: bedrock (bedrock): no AWS credentials found" in none.stdout
    secret = "fakeBedrockSecret/K7MDENG+bPxRfiCYEXAMPLEKEY"
    found = hapaxd(
        "check-config",
        write(tmp_path, good),
        env={**env, "AWS_ACCESS_KEY_ID": "AKIAFAKE", "AWS_SECRET_ACCESS_KEY": secret},
    )
    assert found.returncode == 0, found.stderr
    assert "bedrock (bedrock): AWS credentials from the AWS credential chain (env)" in found.stdout
    assert secret not in found.stdout + found.stderr
