"""The README's "Calling it with grpcurl" cookbook, run command by command as written (the
address swapped for a test gateway on the built-in local provider) with the real grpcurl
binary: each does what the README says it prints."""

from __future__ import annotations

import json
import pathlib
import re
import shlex

from tests.conftest import Gateway
from tests.e2e.test_grpcurl import grpcurl

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Calling it with grpcurl"


def commands() -> list[tuple[list[str], str]]:
    """(grpcurl arguments, what the README shows after the command) for each `$ grpcurl`."""
    text = README.read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    found = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        for command in re.split(r"^\$ ", block, flags=re.M)[1:]:
            lines = command.split("\n")
            joined = ""
            while lines and lines[0].endswith("\\"):
                joined += lines.pop(0)[:-1]
            joined += lines.pop(0)
            found.append((shlex.split(joined)[1:], "\n".join(lines).strip()))
    return found


def messages(out: str) -> list[dict[str, object]]:
    decoder, text, at, found = json.JSONDecoder(), out.strip(), 0, []
    while at < len(text):
        message, at = decoder.raw_decode(text, at)
        found.append(message)
        while at < len(text) and text[at].isspace():
            at += 1
    return found


async def test_the_cookbook_covers_what_operators_need() -> None:
    methods = {args[-1] for args, _ in commands()}
    assert {
        "list",
        "hapax.v1.CompletionService/Complete",
        "hapax.v1.CompletionService/StreamComplete",
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/Watch",
        "hapax.v1.AdminService/ListProviders",
    } <= methods
    assert any(args[-2] == "describe" for args, _ in commands() if len(args) > 1)
    assert any("-H" in args for args, _ in commands())  # metadata


async def test_each_cookbook_command_prints_what_the_readme_shows(gateway: Gateway) -> None:
    for args, shown in commands():
        args = [gateway.address if a == "localhost:50051" else a for a in args]
        code, out, err = await grpcurl(*args)
        method = args[-1]
        if method == "grpc.health.v1.Health/Watch":  # a watch ends when -max-time does
            assert "DeadlineExceeded" in err, err
        else:
            assert code == 0, f"{args}: {err}"
        if method in ("list",):
            assert out.split() == shown.split()
        elif args[-2:-1] == ["describe"]:
            assert shown.splitlines()[-1].strip() in out  # the closing brace at least
            assert all(line.strip() in out for line in shown.splitlines()[2:-1]), out
        elif method.endswith("/Complete"):
            [answer] = messages(out)
            text = str(answer["text"])
            assert text.startswith("[hapax local provider") and text in shown
            if "-H" in args:
                assert answer["id"] == "my-trace-1"
        elif method.endswith("/StreamComplete"):
            streamed = messages(out)
            assert streamed[0]["delta"] == "[hapax" and streamed[-1]["finish_reason"]
        elif method.startswith("grpc.health.v1.Health/"):
            assert messages(out)[0] == {"status": "SERVING"}
        elif method.endswith("/ListProviders"):
            [listing] = messages(out)
            assert listing["providers"][0]["name"] == "local"  # type: ignore[index]
