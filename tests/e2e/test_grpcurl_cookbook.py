"""The README's "Calling it with grpcurl" cookbook, run command by command as written (the
address swapped for a test gateway on the built-in local provider) with the real grpcurl
binary: each does what the README says it prints."""

from __future__ import annotations

from tests.conftest import Gateway
from tests.e2e.test_grpcurl import grpcurl
from tests.support.readme import console_commands, json_messages

SECTION = "## Calling it with grpcurl"


def commands() -> list[tuple[list[str], str]]:
    return console_commands(SECTION)


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
            [answer] = json_messages(out)
            text = str(answer["text"])
            assert text.startswith("[hapax local provider") and text in shown
            if "-H" in args:
                assert answer["id"] == "my-trace-1"
        elif method.endswith("/StreamComplete"):
            streamed = json_messages(out)
            assert streamed[0]["delta"] == "[hapax" and streamed[-1]["finish_reason"]
        elif method.startswith("grpc.health.v1.Health/"):
            assert json_messages(out)[0] == {"status": "SERVING"}
        elif method.endswith("/ListProviders"):
            [listing] = json_messages(out)
            assert listing["providers"][0]["name"] == "local"  # type: ignore[index]
