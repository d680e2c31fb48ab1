"""The README's "Response cache" examples, run as written: its config parses into the settings
it describes, and its grpcurl commands (the real grpcurl binary, the address swapped for the test
gateway's) print what the README shows: a miss, then a hit, and only-if-cached's NOT_FOUND."""

from __future__ import annotations

import re

import yaml

from tests.conftest import StartGateway, make_settings
from tests.e2e.test_grpcurl import grpcurl
from tests.support.readme import README, console_commands

SECTION = "## Response cache"


def test_the_sections_config_example_is_valid() -> None:
    text = README.read_text()
    body = text[text.index(SECTION) :]
    body = body[: body.index("\n## ", len(SECTION))]
    [block] = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", body, re.S)]
    cache = make_settings(**block).cache
    assert cache.backend == "local" and cache.ttl == 3600 and cache.max_bytes == 256 * 2**20
    assert cache.models["support-bot"].scope == "team"
    semantic = cache.models["faq"].semantic
    assert semantic is not None and semantic.threshold == 0.95


async def test_the_sections_commands_print_what_it_shows(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(make_settings(cache={"models": {"*": {}}}))
    commands = console_commands(SECTION)
    assert len(commands) == 3
    for at, (args, shown) in enumerate(commands):
        args = [gateway.address if a == "localhost:50051" else a for a in args]
        code, out, err = await grpcurl(*args)
        printed = out + err
        for line in shown.splitlines():
            assert line.strip() in printed, (line, printed)
        assert (code == 0) == (at < 2), printed
        if at == 0:  # the entry is written after the answer leaves: wait for it
            await gateway.app.generations.current.cache.state.drain()
