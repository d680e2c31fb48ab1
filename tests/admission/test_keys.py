"""API keys without a server: the key ring, a key's policy, reading the credential from metadata,
and the auth section of the config."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from hapaxd import config
from hapaxd.admission import keys as keys_module
from hapaxd.admission.keys import Caller, KeyRing
from hapaxd.calls.metadata import credential
from hapaxd.core.errors import MetadataKeyNotAllowed, ModelNotAllowed
from hapaxd.core.validation import Limits, build_request
from tests.admission.conftest import NARROW_KEY, OPS_KEY, SEARCH_KEY, keys
from tests.conftest import make_settings


def ring(**overrides: dict[str, Any]) -> KeyRing:
    return KeyRing(make_settings(auth={"keys": keys(**overrides)}).auth.keys)


def test_a_presented_key_is_known_by_its_digest_and_becomes_its_id() -> None:
    found = ring()
    assert found.verify(SEARCH_KEY) == Caller.of(make_settings(auth={"keys": keys()}).auth.keys[0])
    assert (found.verify(SEARCH_KEY) or Caller("")).id == "search"
    assert (found.verify(OPS_KEY.encode()) or Caller("")).admin is True
    assert found.verify(SEARCH_KEY + "x") is None
    assert found.verify("") is None
    assert found.verify(config.digest(SEARCH_KEY)) is None, "the digest is not the key"


def test_every_configured_digest_is_compared_whichever_key_matches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[bytes] = []
    real = keys_module.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(a)
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", counting)
    found = ring()
    for key in (SEARCH_KEY, NARROW_KEY, "wrong"):
        compared.clear()
        found.verify(key)
        assert len(compared) == 3, "no early exit: the time does not tell which key matched"


def test_a_key_whose_secret_was_not_checked_matches_nothing() -> None:
    settings = config.parse(
        {
            "providers": [{"name": "l", "type": "local", "models": {"*": "local"}}],
            "default_model": "m",
            "auth": {"keys": [{"id": "k", "key_env": "UNSET_KEY"}]},
        },
        {},
        secrets=False,
    )
    assert settings.auth.keys[0].sha256 == ""
    assert KeyRing(settings.auth.keys).verify("") is None
    assert len(KeyRing(settings.auth.keys)) == 0


@pytest.mark.parametrize(
    ("patterns", "model", "allowed"),
    [
        (["*"], "anything", True),
        (["chat-*"], "chat-fast", True),
        (["chat-*"], "chatty", False),
        (["gpt-4o", "claude-?"], "claude-3", True),
        (["gpt-4o", "claude-?"], "gpt-4o-mini", False),
        (["Chat"], "chat", False),
    ],
)
def test_a_key_may_use_the_models_its_globs_match(
    patterns: list[str], model: str, allowed: bool
) -> None:
    key = make_settings(auth={"keys": keys(search={"models": patterns})}).auth.keys[0]
    assert Caller.of(key).may_use(model) is allowed


def request(model: str, metadata: dict[str, str]) -> Any:
    return build_request(
        model=model,
        messages=[],
        prompt="hi",
        max_tokens=None,
        temperature=None,
        top_p=None,
        stop=[],
        user="",
        metadata=metadata,
        request_id="r",
        limits=Limits(1000, 10),
    )


def test_authorize_refuses_a_model_then_metadata_keys_outside_the_policy() -> None:
    narrow = ring().verify(NARROW_KEY)
    assert narrow is not None
    narrow.authorize(request("chat-fast", {"tenant": "a"}))
    with pytest.raises(ModelNotAllowed) as model:
        narrow.authorize(request("gpt-4o", {"tenant": "a"}))
    assert (model.value.client, model.value.subject) == ("narrow", {"model": "gpt-4o"})
    with pytest.raises(MetadataKeyNotAllowed) as meta:
        narrow.authorize(request("chat-fast", {"tenant": "a", "cost_center": "9", "x": "1"}))
    assert meta.value.subject == {"metadata_keys": "cost_center,x"}
    search = ring().verify(SEARCH_KEY)
    assert search is not None
    search.authorize(request("gpt-4o", {"anything": "goes"}))


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((("authorization", "Bearer k1"),), ("k1", "")),
        ((("authorization", "bearer   k1  "),), ("k1", "")),
        ((("authorization", "BEARER k1"),), ("k1", "")),
        ((("x-api-key", "k2"),), ("k2", "")),
        ((("authorization", "Bearer k1"), ("x-api-key", "k2")), ("k1", "")),
        ((("authorization", "Basic dXNlcjpwYXNz"), ("x-api-key", "k2")), ("k2", "")),
        (
            (("authorization", "Basic dXNlcjpwYXNz"),),
            ("", "the authorization metadata must be 'Bearer <key>'"),
        ),
        (
            (("authorization", "Bearer "),),
            ("", "the authorization metadata must be 'Bearer <key>'"),
        ),
        ((("x-request-id", "r1"),), ("", "")),
        ((), ("", "")),
        (None, ("", "")),
    ],
)
def test_the_key_is_read_from_bearer_authorization_or_x_api_key(
    metadata: Any, expected: tuple[str, str]
) -> None:
    assert credential(metadata) == expected


# --- the auth section of the config ------------------------------------------------------------


def parse(auth: Any, environ: dict[str, str] | None = None) -> config.Settings:
    data = {
        "providers": [{"name": "l", "type": "local", "models": {"*": "local"}}],
        "default_model": "m",
    }
    if auth is not None:
        data["auth"] = auth
    return config.parse(data, environ or {})


def problems(auth: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        parse(auth, environ)
    return str(caught.value).splitlines()


def test_auth_is_on_by_default_and_needs_keys() -> None:
    assert problems(None) == [
        "auth.keys: no API keys while auth is enabled: add keys (hapaxd hash-key makes one), or "
        "set auth.enabled: false to serve every caller that reaches the port"
    ]
    assert parse({"enabled": False}).auth.enabled is False
    assert config.default_settings({}).auth.enabled is False, "make run: local use, no keys"


def test_keys_from_the_environment_and_from_a_file_are_hashed_at_load(
    tmp_path: pathlib.Path,
) -> None:
    secret_file = tmp_path / "billing"
    secret_file.write_text("hpx_from-a-file\n")
    settings = parse(
        {
            "keys": [
                {"id": "env", "key_env": "TEAM_KEY"},
                {"id": "file", "key_file": str(secret_file)},
                {"id": "hash", "sha256": config.digest("hpx_hashed").upper()},
            ]
        },
        {"TEAM_KEY": "hpx_from-env"},
    )
    digests = [k.sha256 for k in settings.auth.keys]
    assert digests == [
        config.digest("hpx_from-env"),
        config.digest("hpx_from-a-file"),
        config.digest("hpx_hashed"),
    ]
    assert "hpx_from-env" not in repr(settings) and "hpx_from-a-file" not in repr(settings)
    assert ("auth.keys[0].key_env", "TEAM_KEY") in settings.secret_env()


def test_every_bad_key_is_named(tmp_path: pathlib.Path) -> None:
    found = problems(
        {
            "reflection": "sometimes",
            "keys": [
                {"id": "a", "sha256": "not-hex"},
                {"id": "b", "key_env": "UNSET"},
                {"id": "c", "key_file": str(tmp_path / "missing")},
                {"id": "d", "sha256": "ab" * 32, "key_env": "ALSO"},
                {"id": "e"},
                {"id": "bad id!", "sha256": "ab" * 32},
                {"id": "g", "sha256": "ab" * 32, "requests_per_minute": 0},
            ],
        }
    )
    assert found == [
        "auth.keys[1].key_env: environment variable UNSET is not set",
        f"auth.keys[2].key_file: cannot read {tmp_path / 'missing'}: No such file or directory",
        "auth.keys[3].key_env: give one of sha256, key_env, key_file; "
        "this key has ['sha256', 'key_env']",
        "auth.keys[0].sha256: not a SHA-256 hex digest (64 hex digits; hapaxd hash-key makes one)",
        "auth.keys[4].sha256: required (or key_env, key_file, client_cert_subject, "
        "client_cert_san)",
        "auth.keys[5].id: String should match pattern '^[A-Za-z0-9_.:@-]{1,64}$'",
        "auth.keys[6].requests_per_minute: Input should be greater than or equal to 1",
        "auth.reflection: Input should be 'open', 'any_key' or 'admin'",
    ]


def test_two_keys_with_one_id_are_refused() -> None:
    assert problems(
        {"keys": [{"id": "a", "sha256": "ab" * 32}, {"id": "a", "sha256": "cd" * 32}]}
    ) == ["auth.keys[1].id: 'a' is used by an earlier key"]
