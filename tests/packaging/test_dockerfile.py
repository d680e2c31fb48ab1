"""The Dockerfile, checked without a Docker engine: its shape (stages, non-root user, ports,
entrypoint), that the build context .dockerignore leaves holds what the COPY lines need, and that
its HEALTHCHECK command really reports a running gateway healthy."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import shlex
import shutil
import sys
import tomllib
from dataclasses import dataclass, field

import pytest

from tests.conftest import Gateway

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.image}"
        return found[-1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with line continuations joined and comments dropped."""
    result, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.strip().partition(" ")
        result.append((keyword.upper(), " ".join(args.split())))
        current = ""
    return result


def stages() -> list[Stage]:
    found: list[Stage] = []
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(words[0], name))
        elif found:
            found[-1].instructions.append((keyword, args))
    return found


def exec_form(args: str) -> list[str]:
    argv = json.loads(args) if args.startswith("[") else shlex.split(args)
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """The final stage's HEALTHCHECK: its --options and its command."""
    args = stages()[-1].last("HEALTHCHECK")
    options_part, sep, command = args.partition("CMD ")
    assert sep, f"HEALTHCHECK has no CMD: {args}"
    options = dict(o.lstrip("-").split("=", 1) for o in options_part.split())
    return options, exec_form(command.strip())


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, duration
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]


# --- .dockerignore, as Docker reads it: last matching pattern wins, `!` re-includes, and a pattern
# matching a parent folder covers everything in it.


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        patterns.append((negate, _regex(line.lstrip("!").strip("/"))))
    return patterns


def ignored(path: str) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, regex in ignore_patterns():
        if any(regex.fullmatch(p) for p in prefixes):
            result = not negate
    return result


def context_files(source: str) -> list[str]:
    """Repo files a COPY source names, as paths relative to the build context."""
    matches = sorted(ROOT.glob(source.rstrip("/")))
    files: list[str] = []
    for match in matches:
        candidates = [match] if match.is_file() else [p for p in match.rglob("*") if p.is_file()]
        files += [str(p.relative_to(ROOT)) for p in candidates]
    return files


# --- shape ---------------------------------------------------------------------------------------


def test_multi_stage_on_python_3_11_slim() -> None:
    found = stages()
    assert len(found) >= 2
    assert all(s.image == "python:3.11-slim" for s in found), [s.image for s in found]
    names = {s.name for s in found[:-1]}
    copies_from = [
        re.search(r"--from=(\S+)", args) for args in found[-1].all("COPY") if "--from=" in args
    ]
    assert copies_from, "the final stage copies nothing from the builder"
    assert all(m is not None and m.group(1) in names for m in copies_from)


def test_final_stage_runs_as_a_non_root_user() -> None:
    user = stages()[-1].last("USER").split(":")[0]
    assert user not in ("root", "0"), user


def test_the_usage_ledger_has_a_directory_the_runtime_user_owns() -> None:
    """The ledger is on by default and the user has no home: HAPAX_STATE_DIR points at a
    directory made for it (and a volume), or the gateway would refuse to start."""
    final = stages()[-1]
    env = " ".join(final.all("ENV"))
    match = re.search(r"HAPAX_STATE_DIR=(\S+)", env)
    assert match is not None, env
    state = match.group(1)
    user = final.last("USER").split(":")[0]
    runs = " ".join(final.all("RUN"))
    assert f"mkdir -p {state}" in runs and f"chown {user}:" in runs and state in runs
    assert state in " ".join(final.all("VOLUME"))


def test_exposes_grpc_and_metrics_ports() -> None:
    ports = {p.split("/")[0] for args in stages()[-1].all("EXPOSE") for p in args.split()}
    assert {"50051", "9090"} <= ports


def test_entrypoint_is_hapaxd_serve() -> None:
    final = stages()[-1]
    assert exec_form(final.last("ENTRYPOINT")) == ["hapaxd"]
    assert exec_form(final.last("CMD")) == ["serve"]


def test_healthcheck_runs_hapaxd_healthcheck_within_its_timeout() -> None:
    options, command = healthcheck()
    assert command[:2] == ["hapaxd", "healthcheck"], command
    assert command[2:] == ["127.0.0.1:50051"], command
    # The CLI gives up after its own --timeout (3s by default), before Docker would kill it.
    assert seconds(options.get("timeout", "30s")) > 3


# --- build context -------------------------------------------------------------------------------


def test_copy_sources_are_in_the_build_context() -> None:
    builder_sources: list[str] = []
    for stage in stages():
        for args in stage.all("COPY"):
            if "--from=" in args:
                continue
            *sources, _dest = [w for w in args.split() if not w.startswith("--")]
            for source in sources:
                files = context_files(source)
                if not any(c in source for c in "*?["):
                    assert files, f"COPY {source}: not in the repository"
                kept = [f for f in files if not ignored(f)]
                assert kept or not files, f"COPY {source}: .dockerignore excludes all of it"
            builder_sources += [s.rstrip("/") for s in sources]

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_roots = pyproject["tool"]["setuptools"]["packages"]["find"]["where"]
    for where in package_roots:
        top = where.split("/")[0]
        assert top in builder_sources, f"packages under {where} are not copied into the image"
    assert "pyproject.toml" in builder_sources


def test_dockerignore_keeps_the_sources_and_drops_local_state() -> None:
    for kept in (
        "pyproject.toml",
        "server/hapaxd/__main__.py",
        "clients/python/hapax/v1/completion_service_pb2.py",
    ):
        assert not ignored(kept), kept
    for dropped in (
        ".git/HEAD",
        ".venv/bin/python",
        "tools/node_modules/.bin/buf",
        "server/hapaxd/__pycache__/app.cpython-311.pyc",
        "hapax_gateway.egg-info/PKG-INFO",
        "tests/conftest.py",
    ):
        assert ignored(dropped), dropped


# --- the HEALTHCHECK, run for real ---------------------------------------------------------------


async def test_the_healthcheck_command_reports_a_running_gateway_healthy(gateway: Gateway) -> None:
    _, command = healthcheck()
    # In the image, PATH starts with the project's venv; here, with this test run's venv.
    path = os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")])
    program = shutil.which(command[0], path=path)
    if program is None:
        pytest.fail(f"{command[0]} is not installed in this environment: run `make venv`")
    port = gateway.address.rsplit(":", 1)[1]
    argv = [program, *(re.sub(r":50051$", f":{port}", arg) for arg in command[1:])]
    assert argv[-1] == gateway.address

    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PATH": path},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "SERVING"
