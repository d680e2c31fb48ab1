"""`pip install ./clients/python` into a fresh venv, without the server's dependencies: the
client and its `hapax` command work on their own against a live gateway."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

from hapaxd.providers.local import PREFIX
from tests.conftest import Gateway
from tests.support.processes import run

CLIENT = pathlib.Path(__file__).resolve().parents[2] / "clients" / "python"


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("client")
    source = root / "src"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", str(source)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return venv


@pytest.mark.timeout(400)
async def test_the_client_installs_alone_and_calls_the_gateway(
    client_venv: pathlib.Path, gateway: Gateway
) -> None:
    python = str(client_venv / "bin" / "python")
    code, out, _ = await run(
        python,
        "-c",
        "import importlib.util as u; print(u.find_spec('hapaxd'), u.find_spec('aiohttp'))",
    )
    assert (code, out) == (0, "None None\n")  # none of the server's packages came along

    hapax = str(client_venv / "bin" / "hapax")
    code, out, err = await run(hapax, "health", "--target", gateway.address)
    assert (code, out) == (0, "SERVING\n"), err
    code, out, err = await run(hapax, "complete", "alone", "--target", gateway.address)
    assert (code, out) == (0, f"{PREFIX} You said: alone\n"), err

    script = (
        "from hapax import Client\n"
        f"with Client({gateway.address!r}) as c:\n"
        "    print(c.complete('from code').text)\n"
    )
    code, out, err = await run(python, "-c", script)
    assert (code, out) == (0, f"{PREFIX} You said: from code\n"), err
