"""The daemonless image build (scripts/build-image.sh) re-implements the Dockerfile's final stage
instead of building it, so the two can drift apart. Checked here without building anything: the
settings the script applies, all read from scripts/image-config.json, say what the Dockerfile says
(user, ports, entrypoint, command, environment, state volume, venv, sources, Python version)."""

from __future__ import annotations

import json
import pathlib
import re
import shlex
from typing import Any

from tests.packaging.test_dockerfile import exec_form, healthcheck, stages

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGE_CONFIG = ROOT / "scripts" / "image-config.json"
BUILD_SCRIPT = ROOT / "scripts" / "build-image.sh"

# Debian's default PATH, which the image starts from. python:3.11-slim puts /usr/local/bin (where
# its own Python lives) in front of it; Debian's python3 is in /usr/bin.
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The Python each Debian suite the script may build from ships as python3.
SUITE_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}


def image() -> dict[str, Any]:
    data = json.loads(IMAGE_CONFIG.read_text())
    assert isinstance(data, dict)
    return data


def dockerfile_env() -> dict[str, str]:
    """The final stage's ENV, `KEY=value ...` or `KEY value`, with $PATH as Debian's default."""
    env: dict[str, str] = {}
    for args in stages()[-1].all("ENV"):
        words = shlex.split(args)
        pairs = [w.split("=", 1) for w in words] if "=" in words[0] else [[words[0], args[1:]]]
        for key, value in pairs:
            env[key] = re.sub(r"\$\{?PATH\}?", DEBIAN_PATH, value)
    return env


def env_list(entries: list[str]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in entries)


def test_user_is_the_dockerfiles_non_root_user() -> None:
    final = stages()[-1]
    config = image()
    assert config["config"]["User"] == final.last("USER")
    user = config["user"]
    assert f"{user['uid']}:{user['gid']}" == config["config"]["User"]
    runs = " ".join(final.all("RUN"))
    assert f"groupadd --system --gid {user['gid']} {user['name']}" in runs, runs
    assert f"useradd --system --uid {user['uid']} --gid {user['name']}" in runs, runs


def test_ports_are_the_dockerfiles() -> None:
    exposed = [p for args in stages()[-1].all("EXPOSE") for p in args.split()]
    expected = {p if "/" in p else f"{p}/tcp" for p in exposed}
    assert set(image()["config"]["ExposedPorts"]) == expected


def test_entrypoint_and_command_are_the_dockerfiles() -> None:
    final = stages()[-1]
    config = image()["config"]
    assert config["Entrypoint"] == exec_form(final.last("ENTRYPOINT"))
    assert config["Cmd"] == exec_form(final.last("CMD"))


def test_environment_is_the_dockerfiles() -> None:
    config = image()
    set_here = env_list(config["config"]["Env"])
    assert set_here == dockerfile_env()
    # What python:3.11-slim gives the Dockerfile's image besides: it must not override any of it.
    inherited = env_list(config["base_env"])
    assert not inherited.keys() & set_here.keys()
    assert inherited.get("LANG") == "C.UTF-8"


def test_state_directory_and_volume_are_the_dockerfiles() -> None:
    final = stages()[-1]
    config = image()
    state = config["state_dir"]
    assert env_list(config["config"]["Env"])["HAPAX_STATE_DIR"] == state
    volumes = [v for args in final.all("VOLUME") for v in exec_form(args)]
    assert config["config"]["Volumes"] == volumes == [state]
    user = config["user"]
    assert f"mkdir -p {state} && chown {user['uid']}:{user['gid']} {state}" in " ".join(
        final.all("RUN")
    )


def test_venv_is_where_the_dockerfile_puts_it() -> None:
    builder, final = stages()[0], stages()[-1]
    venv = image()["venv"]
    assert f"python -m venv {venv}" in builder.all("RUN")
    assert any(args.split()[-2:] == [venv, venv] for args in final.all("COPY"))
    path = env_list(image()["config"]["Env"])["PATH"]
    assert path.split(":")[0] == f"{venv}/bin"


def test_python_is_the_dockerfiles_minor_version() -> None:
    tag = stages()[-1].image  # python:3.11-slim
    match = re.fullmatch(r"python:(\d+\.\d+)(?:[.-].*)?", tag)
    assert match, tag
    assert SUITE_PYTHON[image()["suite"]] == match.group(1)


def test_sources_are_what_the_dockerfile_copies() -> None:
    copied: set[str] = set()
    for args in stages()[0].all("COPY"):
        *sources, _dest = [w for w in args.split() if not w.startswith("--")]
        copied |= {s.rstrip("/").rstrip("*") for s in sources}
    match = re.search(r"^SOURCES=\(([^)]*)\)", BUILD_SCRIPT.read_text(), re.MULTILINE)
    assert match, "build-image.sh has no SOURCES=(...)"
    assert set(match.group(1).split()) == copied


def test_the_build_script_applies_every_setting_from_the_config_file() -> None:
    script = BUILD_SCRIPT.read_text()
    assert "scripts/image-config.json" in script
    for key, value in image()["config"].items():
        query = f".config.{key}[]" if isinstance(value, list) else f".config.{key}"
        assert query in script, f"build-image.sh does not apply {key} ({query})"
    for key in ("suite", "packages", "venv", "user.name", "user.uid", "user.gid", "state_dir"):
        assert f".{key}" in script, f"build-image.sh does not read .{key}"
    assert ".base_env[]" in script


def test_the_healthcheck_can_run_in_the_image() -> None:
    """No OCI field holds a HEALTHCHECK; the tests run its command with `runc exec`, which
    needs its program on the image's PATH (the entrypoint's) and its port exposed."""
    _, command = healthcheck()
    config = image()["config"]
    assert command[0] == config["Entrypoint"][0]
    port = command[-1].rsplit(":", 1)[1]
    assert f"{port}/tcp" in config["ExposedPorts"]
