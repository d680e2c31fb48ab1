"""The README's "Costs, budgets and usage" examples, run as written against a gateway that has
answered a few calls: the grpcurl GetUsage (the real grpcurl binary; the address swapped for the
test gateway's) and `hapax usage` (the Python client's command). Its config example parses."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

import yaml

from hapax.cli import _parser, _run
from hapax.v1 import completion_service_pb2 as pb
from hapaxd import config
from tests.admission.conftest import keys
from tests.conftest import StartGateway, make_settings
from tests.e2e.test_grpcurl import grpcurl
from tests.support.readme import README, console_commands

SECTION = "## Costs, budgets and usage"


def test_the_sections_config_examples_are_valid() -> None:
    text = README.read_text()
    body = text[text.index(SECTION) :]
    body = body[: body.index("\n## ", len(SECTION))]
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", body, re.S)]
    prices, budgets, shared = blocks
    settings = make_settings(**prices)
    assert settings.prices.models["gpt-4o-mini"].cached_prompt is not None
    assert settings.ledger.retention_days == 90
    with_keys = make_settings(**budgets, auth={"keys": keys(ops={"owner": "platform"})})
    assert isinstance(with_keys, config.Settings)
    assert [b.name for b in with_keys.budgets.limits] == ["search-daily", "platform-monthly"]
    in_redis = make_settings(**shared, auth={"keys": keys()})
    assert in_redis.budgets.backend == "redis" and in_redis.budgets.on_store_error == "closed"
    assert in_redis.budgets.redis_timeout == 0.25


async def test_the_sections_commands_run_and_show_the_calls(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    gateway = await start_gateway(
        make_settings(
            prices={"models": {"local": {"prompt": 1, "completion": 2}}},
            ledger={"path": str(tmp_path / "usage.db")},
        )
    )
    for _ in range(3):
        await gateway.stub.Complete(pb.CompleteRequest(prompt="hello"))
    commands = console_commands(SECTION)
    assert [args[0] for args, _ in commands] == ["-plaintext", "usage"]
    for args, _shown in commands:
        args = [gateway.address if a == "localhost:50051" else a for a in args]
        if args[0] == "usage":  # hapax usage ...
            out = io.StringIO()
            parsed = _parser().parse_args([*args, "--target", gateway.address])
            assert await asyncio.to_thread(_run, parsed, out) == 0
            lines = out.getvalue().splitlines()
            assert lines[0].split()[:3] == ["key", "model", "calls"]
            assert lines[1].split()[:3] == ["-", "default", "3"]  # auth off: no key id
        else:
            code, out_text, err = await grpcurl(*args)
            assert code == 0, err
            [row] = json.loads(out_text)["rows"]
            assert row["model"] == "default" and row["calls"] == "3"
            assert row["cost"]["currency"] == "USD" and int(row["cost"]["nanos"]) > 0
