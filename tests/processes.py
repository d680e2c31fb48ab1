"""Running a peer program (grpcurl, node, the hapaxd CLI) from a test without blocking the event
loop the gateway under test runs on."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping


async def run(
    *argv: str, within: float = 30.0, env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a program run to its end, killed after `within` seconds."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else dict(env),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
