"""The `hapax` command line (clients/python/hapax/cli.py), run as a user would, from the venv's
console script, against a live gateway: complete (whole and streamed), embed, models, health,
the key from --key, and a failed call's readable error and exit code."""

from __future__ import annotations

import pathlib
import sys

from hapaxd.providers.local import PREFIX
from tests.admission.conftest import SEARCH_KEY, keys
from tests.conftest import Gateway, StartGateway, make_settings
from tests.support.processes import run

HAPAX = str(pathlib.Path(sys.executable).parent / "hapax")


async def hapax(gateway: Gateway, *args: str) -> tuple[int, str, str]:
    return await run(HAPAX, *args, "--target", gateway.address, within=30)


async def test_complete_whole_and_streamed(gateway: Gateway) -> None:
    code, out, err = await hapax(gateway, "complete", "hello there")
    assert (code, out) == (0, f"{PREFIX} You said: hello there\n"), err
    code, out, err = await hapax(gateway, "complete", "stream it", "--stream", "--max-tokens", "3")
    assert (code, out) == (0, "[hapax local provider:\n"), err


async def test_models_embed_and_health(gateway: Gateway) -> None:
    code, out, _ = await hapax(gateway, "models")
    assert code == 0 and out.splitlines()[0].startswith("default (default)\t1:local(local)\t")
    code, out, _ = await hapax(gateway, "embed", "hello", "world", "--dimensions", "3")
    lines = out.splitlines()
    assert code == 0 and [line.split("\t")[0] for line in lines] == ["hello", "world"]
    assert len(lines[0].split("\t")[1].split()) == 3
    code, out, _ = await hapax(gateway, "health")
    assert (code, out) == (0, "SERVING\n")


async def test_a_key_and_a_readable_error(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(make_settings(auth={"keys": keys()}))
    code, out, err = await hapax(gateway, "complete", "hi", "--key", SEARCH_KEY)
    assert code == 0 and out.startswith(PREFIX), err

    code, out, err = await hapax(gateway, "complete", "hi")
    assert code == 1 and out == ""
    first, *rest = err.splitlines()
    assert first.startswith("error: UNAUTHENTICATED (API_KEY_MISSING): no API key")
    assert rest and rest[-1].startswith("  request id ")
    assert "Traceback" not in err

    code, _, err = await hapax(gateway, "complete", "hi", "--key", SEARCH_KEY, "--temperature", "9")
    assert code == 1
    assert err.splitlines()[:2] == [
        "error: INVALID_ARGUMENT (INVALID_REQUEST): invalid request: temperature: must be a "
        "number from 0 to 2",
        "  temperature: must be a number from 0 to 2",
    ]
