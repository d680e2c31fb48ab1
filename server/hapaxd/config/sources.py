"""Where a config's values come from: the YAML file, `${VAR}` / `${VAR:-default}` in its strings,
the secrets its `*_env` keys name, and, with no file, the built-in default (the local provider plus
any provider whose usual environment variable is set).

All of it works on the plain parsed YAML (dicts, lists, strings), before the schema sees it.
Imports nothing else of hapaxd but this package.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from hapaxd.config.messages import ConfigError
from hapaxd.config.provider_types import KINDS

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
        options = provider.get("options")
        path = options.get("credentials_file") if isinstance(options, dict) else None
        if provider.get("type") == "vertex" and isinstance(path, str) and path:
            where = f"providers[{i}].options.credentials_file"
            problems += _service_account(provider, path, where, secrets=secrets)
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


# What a Google service-account key file must hold for its tokens to be minted.
SERVICE_ACCOUNT_FIELDS = ("client_email", "private_key", "token_uri")


def _service_account(
    provider: dict[str, Any], path: str, where: str, *, secrets: bool
) -> list[str]:
    """Fill `credentials` of a vertex provider (in place) from its service-account key file;
    the problems name the file and the field at fault, never the key."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        return [f"{where}: cannot read {path}: {exc.strerror}"] if secrets else []
    except UnicodeDecodeError:
        return [f"{where}: {path} is not text"]
    try:
        info = json.loads(text)
    except ValueError:
        return [f"{where}: {path} is not JSON (a service-account key file is)"]
    if not isinstance(info, dict) or info.get("type") != "service_account":
        return [f"{where}: {path} is not a service-account key file (type: service_account)"]
    missing = [k for k in SERVICE_ACCOUNT_FIELDS if not isinstance(info.get(k), str) or not info[k]]
    if missing:
        return [f"{where}: {path} has no {', '.join(missing)}"]
    provider["credentials"] = text
    return []


def service_account_secrets(credentials: str) -> list[str]:
    """What of a service-account key file's JSON must never be seen (the redactor masks them):
    its private key as PEM, as the file escapes it, and each line of its base64 body, so even a
    piece of it is masked."""
    try:
        info = json.loads(credentials) if credentials else None
    except ValueError:
        return [credentials]
    key = info.get("private_key") if isinstance(info, dict) else None
    if not isinstance(key, str) or not key:
        return []
    lines = [line.strip() for line in key.splitlines() if len(line.strip()) >= 32]
    return [key, key.replace("\n", "\\n"), *lines]


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
