"""The example programs under clients/<lang>/examples/ (Python, TypeScript, Go; Java in
test_java_example.py), each run against a live gateway with auth on: it completes, reads a stream
to its end, asks the health service, passes an API key and a deadline, and prints the decoded
ErrorInfo and RetryInfo of a call its key's limit refuses (the key allows two calls a minute;
the third is refused)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pytest

from hapaxd import config
from hapaxd.providers.local import PREFIX
from tests.conftest import StartGateway, make_settings
from tests.support.processes import run

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "node_modules"
TYPESCRIPT = ROOT / "clients" / "typescript"
GO_STUBS = ROOT / "clients" / "go" / "hapax" / "v1"
GO_PACKAGE = "github.com/hapax/hapax/gen/go/hapax/v1"  # the protos' go_package
DEBIAN_GOPATH = "/usr/share/gocode"  # golang-google-grpc-dev and friends
KEY = "hpx_example-0123456789abcdef"


@pytest.fixture(scope="module")
def typescript_example() -> pathlib.Path:
    """The TypeScript example compiled (tsc from tools/; its packages through a node_modules
    link to tools/, which git ignores)."""
    if not (TOOLS / ".bin" / "tsc").exists():
        pytest.fail("typescript is missing from tools/node_modules: run `make tools`")
    link = TYPESCRIPT / "node_modules"
    if not link.exists():
        link.symlink_to(os.path.relpath(TOOLS, TYPESCRIPT))
    shutil.rmtree(TYPESCRIPT / "dist", ignore_errors=True)
    built = subprocess.run(
        [str(TOOLS / ".bin" / "tsc"), "-p", str(TYPESCRIPT)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    return TYPESCRIPT / "dist" / "examples" / "example.js"


@pytest.fixture(scope="module")
def go_example(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The Go example built in GOPATH mode against Debian's grpc-go: a GOPATH of its own holds
    the committed stubs (a link) at their package path, then /usr/share/gocode."""
    go = shutil.which("go")
    if go is None or not pathlib.Path(DEBIAN_GOPATH, "src", "google.golang.org", "grpc").is_dir():
        pytest.fail("go or golang-google-grpc-dev is not installed: run `make tools`")
    root = tmp_path_factory.mktemp("go")
    package = root / "gopath" / "src" / GO_PACKAGE
    package.parent.mkdir(parents=True)
    package.symlink_to(GO_STUBS)
    binary = root / "example"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{root / 'gopath'}:{DEBIAN_GOPATH}",
        "GOCACHE": str(root / "cache"),
        "GOFLAGS": "",
    }
    built = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=ROOT / "clients" / "go" / "examples" / "example",
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    return binary


def check(printed: dict[str, Any], language: str) -> None:
    assert printed["complete"]["text"] == f"{PREFIX} You said: hello from {language}"
    assert printed["complete"]["provider"] == "local" and printed["complete"]["id"]
    assert printed["stream"]["text"] == f"{PREFIX} You said: stream to {language}"
    assert printed["stream"]["messages"] > 2 and printed["stream"]["finishReason"] in (
        1,
        "FINISH_REASON_STOP",
    )
    assert printed["health"] in (1, "SERVING")
    error = printed["error"]
    assert error["code"] in ("RESOURCE_EXHAUSTED", "ResourceExhausted")
    assert error["reason"] == "RATE_LIMITED"
    assert error["metadata"]["client"] == "example" and error["metadata"]["request_id"]
    assert 0 < error["retryDelaySeconds"] <= 60


async def gateway_address(start_gateway: StartGateway) -> str:
    key = {"id": "example", "sha256": config.digest(KEY), "requests_per_minute": 2}
    gateway = await start_gateway(make_settings(auth={"keys": [key]}))
    return gateway.address


async def test_the_python_example(start_gateway: StartGateway) -> None:
    address = await gateway_address(start_gateway)
    example = ROOT / "clients" / "python" / "examples" / "example.py"
    code, out, err = await run(sys.executable, str(example), address, KEY, within=60)
    assert code == 0, err
    check(json.loads(out), "Python")


async def test_the_typescript_example(
    start_gateway: StartGateway, typescript_example: pathlib.Path
) -> None:
    address = await gateway_address(start_gateway)
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    code, out, err = await run(node, str(typescript_example), address, KEY, within=60)
    assert code == 0, err
    check(json.loads(out), "TypeScript")


async def test_the_go_example(start_gateway: StartGateway, go_example: pathlib.Path) -> None:
    address = await gateway_address(start_gateway)
    code, out, err = await run(str(go_example), address, KEY, within=60)
    assert code == 0, err
    check(json.loads(out), "Go")
