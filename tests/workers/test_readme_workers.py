"""The README's "Running in production" worker example, run as written: its config snippet in a
config file, `hapaxd check-config` on it prints what the README shows, and `hapaxd serve` on it
starts the two workers the README says (the address swapped for a free loopback port)."""

from __future__ import annotations

import asyncio
import pathlib
import re
import signal

import yaml

from tests.support.processes import HAPAXD, free_port, run
from tests.support.readme import README, console_commands

SECTION = "## Running in production"


def _workers_example() -> dict[str, object]:
    text = README.read_text()
    body = text[text.index("### Every core") :]
    body = body[: re.search(r"\n##+ ", body).start()]  # type: ignore[union-attr]
    [block] = re.findall(r"```yaml\n(.*?)```", body, re.S)
    return dict(yaml.safe_load(block))


async def test_the_worker_examples_commands_print_what_the_readme_shows(
    tmp_path: pathlib.Path,
) -> None:
    example = _workers_example()
    port = free_port()
    data = {
        **example,
        "server": {**example["server"], "address": f"127.0.0.1:{port}"},  # type: ignore[dict-item]
        "metrics": {"address": f"127.0.0.1:{free_port()}"},
        "providers": [{"name": "local", "type": "local", "models": {"*": "local"}}],
        "default_model": "default",
        "auth": {"enabled": False},
        "ledger": {"path": str(tmp_path / "usage.db")},
    }
    (tmp_path / "hapax.yaml").write_text(yaml.safe_dump(data))
    commands = [c for c in console_commands(SECTION) if c[0][:1] in (["check-config"], ["serve"])]
    assert [args[0] for args, _ in commands] == ["check-config", "serve"]
    [(check, shown_check), (serve, shown_serve)] = commands
    code, out, err = await run(*HAPAXD, *check, cwd=tmp_path)
    assert code == 0, err
    assert shown_check in out
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            *HAPAXD, *serve, cwd=tmp_path, stdout=sink, stderr=sink
        )
    try:
        async with asyncio.timeout(60):
            while shown_serve not in log.read_text(errors="replace"):
                assert proc.returncode is None, log.read_text()[-2000:]
                await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, log.read_text()[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
