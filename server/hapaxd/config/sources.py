"""Where a config's values come from: the YAML file, `${VAR}` / `${VAR:-default}` in its strings,
the secrets its `*_env` keys name, and, with no file, the built-in default (the local provider plus
any provider whose usual environment variable is set).

All of it works on the plain parsed YAML (dicts, lists, strings), before the schema sees it.
Imports nothing else of hapaxd but this package.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from hapaxd.config.messages import ConfigError
from hapaxd.config.provider_types import KIND, KINDS

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def read(path: str) -> Any:
    """The parsed YAML of the file at `path`; ConfigError when it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def expand(node: Any, environ: Mapping[str, str]) -> tuple[Any, list[tuple[str, str]]]:
    """A copy of the parsed YAML with ${VAR} and ${VAR:-default} replaced in every string value,
    and (key, problem) for each variable that is unset and has no default: that reference stays
    as written."""
    missing: list[tuple[str, str]] = []
    return _expand(node, environ, "", missing), missing


def _expand(
    node: Any, environ: Mapping[str, str], path: str, missing: list[tuple[str, str]]
) -> Any:
    if isinstance(node, dict):
        return {
            k: _expand(v, environ, f"{path}.{k}" if path else str(k), missing)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_expand(v, environ, f"{path}[{i}]", missing) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ and (environ[name] or default is None):
            return environ[name]
        if default is not None:
            return default
        missing.append((path, f"{path}: environment variable {name} is not set"))
        return match.group(0)

    return _ENV_REF.sub(substitute, node)


def fill_secrets(data: dict[str, Any], environ: Mapping[str, str], *, secrets: bool) -> list[str]:
    """Fill api keys and metrics credentials in `data` (in place) from the environment variables
    the config names, and the digests of auth keys from their key_env or key_file, and return
    the problems: a provider key written in the file, or, unless secrets=False, a named variable
    that is unset or a key file that cannot be read (with secrets=False the secret stays empty)."""
    problems: list[str] = []

    def secret(key: str, env: str) -> str | None:
        if environ.get(env):
            return environ[env]
        if secrets:
            problems.append(f"{key}: environment variable {env} is not set")
        return None

    providers = data.get("providers")
    for i, provider in enumerate(providers if isinstance(providers, list) else []):
        if not isinstance(provider, dict):
            continue
        if "api_key" in provider:
            problems.append(
                f"providers[{i}].api_key: keys are not written in the file; "
                "name an environment variable in api_key_env"
            )
            del provider["api_key"]
        env = provider.get("api_key_env")
        if env and isinstance(env, str) and (value := secret(f"providers[{i}].api_key_env", env)):
            provider["api_key"] = value
        if "credentials" in provider:
            problems.append(
                f"providers[{i}].credentials: keys are not written in the file; "
                "name the key file in options.credentials_file"
            )
            del provider["credentials"]
        problems += _secret_file(provider, f"providers[{i}]", secrets=secrets)
    auth = data.get("auth")
    keys = auth.get("keys") if isinstance(auth, dict) else None
    for i, key in enumerate(keys if isinstance(keys, list) else []):
        if isinstance(key, dict):
            problems += _hash_key(key, f"auth.keys[{i}]", secret, secrets=secrets)
    for section in ("rate_limit", "budgets", "cache"):
        shared = data.get(section)
        if isinstance(shared, dict):
            env = shared.get("redis_password_env")
            if (
                env
                and isinstance(env, str)
                and (value := secret(f"{section}.redis_password_env", env))
            ):
                shared["redis_password"] = value
    ledger = data.get("ledger")
    if isinstance(ledger, dict):
        env = ledger.get("postgres_password_env")
        if env and isinstance(env, str) and (value := secret("ledger.postgres_password_env", env)):
            ledger["postgres_password"] = value
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        for key in ("bearer_token", "basic_auth_password"):
            env = metrics.get(f"{key}_env")
            if env and isinstance(env, str) and (value := secret(f"metrics.{key}_env", env)):
                metrics[key] = value
    return problems


def _secret_file(provider: dict[str, Any], where: str, *, secrets: bool) -> list[str]:
    """Fill `credentials` of a provider whose type reads a secret from a file its options name
    (provider_types.SecretFile), in place; the problems name the file and what is wrong with
    it, never its content. A file that cannot be read is a problem only when secrets=True."""
    kind = KIND.get(provider.get("type"))  # type: ignore[arg-type]
    options = provider.get("options")
    if kind is None or kind.secret_file is None or not isinstance(options, dict):
        return []
    path = options.get(kind.secret_file.option)
    if not isinstance(path, str) or not path:
        return []
    where = f"{where}.options.{kind.secret_file.option}"
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        return [f"{where}: cannot read {path}: {exc.strerror}"] if secrets else []
    except UnicodeDecodeError:
        return [f"{where}: {path} is not text"]
    problem = kind.secret_file.check(text)
    if problem:
        return [f"{where}: {path} {problem}"]
    provider["credentials"] = text
    return []


KEY_SOURCES = ("sha256", "key_env", "key_file")


def digest(key: str) -> str:
    """The SHA-256 hex digest of an API key, as `auth.keys[].sha256` holds it."""
    return hashlib.sha256(key.encode()).hexdigest()


def _hash_key(
    key: dict[str, Any], where: str, secret: Callable[[str, str], str | None], *, secrets: bool
) -> list[str]:
    """Fill `sha256` of one auth key from its key_env or key_file (in place); the key itself is
    not kept. Problems: two sources, an unreadable or empty file."""
    given = [name for name in KEY_SOURCES if key.get(name)]
    if len(given) > 1:
        return [f"{where}.{given[1]}: give one of sha256, key_env, key_file; this key has {given}"]
    env, path = key.get("key_env"), key.get("key_file")
    value: str | None = None
    if isinstance(env, str) and env:
        value = secret(f"{where}.key_env", env)
    elif isinstance(path, str) and path:
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().strip()
        except OSError as exc:
            return [f"{where}.key_file: cannot read {path}: {exc.strerror}"] if secrets else []
        except UnicodeDecodeError:
            return [f"{where}.key_file: {path} is not text"]
        if not value and secrets:
            return [f"{where}.key_file: {path} is empty"]
    if value:
        key["sha256"] = digest(value)
    return []


def default_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """The built-in config, as the YAML it stands for: the providers the environment has
    (provider_types.KINDS' `detect`, in their order) first, the local provider last;
    HAPAX_GRPC_ADDRESS and HAPAX_METRICS_ADDRESS move the listeners."""
    providers: list[dict[str, Any]] = []
    for kind in KINDS:
        found = kind.detect(environ) if kind.detect is not None else None
        if found is not None:
            providers.append({"name": kind.name, "type": kind.name, **found})
    providers.append({"name": "local", "type": "local", "models": {"*": "local"}})
    # For local use: no keys, so auth is off (App logs a warning that says so).
    data: dict[str, Any] = {
        "providers": providers,
        "default_model": "default",
        "auth": {"enabled": False},
    }
    if environ.get("HAPAX_GRPC_ADDRESS"):
        data["server"] = {"address": environ["HAPAX_GRPC_ADDRESS"]}
    if environ.get("HAPAX_METRICS_ADDRESS"):
        data["metrics"] = {"address": environ["HAPAX_METRICS_ADDRESS"]}
    return data
