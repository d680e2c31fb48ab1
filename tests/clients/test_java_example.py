"""The Java example (clients/java/examples/Example.java) built with plain javac against the
committed stubs (clients/java/src/main/java) and Debian's jars, then run against a live gateway
with auth on, checked like the Python, TypeScript and Go examples of test_examples.py."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from tests.clients.test_examples import KEY, ROOT, check, gateway_address
from tests.conftest import StartGateway
from tests.support.processes import run

JAVA = ROOT / "clients" / "java"
DEBIAN_JARS = pathlib.Path("/usr/share/java")
# libgrpc-java's jars and what they need at run time (Debian's package declares almost none of
# it): protobuf, guava, gson, perfmark and netty, and javax.annotation.Generated for the stubs.
JARS = [
    "grpc-api", "grpc-context", "grpc-core", "grpc-netty", "grpc-protobuf", "grpc-protobuf-lite",
    "grpc-stub", "protobuf", "guava", "gson", "perfmark-api", "netty-buffer", "netty-codec",
    "netty-codec-http", "netty-codec-http2", "netty-common", "netty-handler", "netty-resolver",
    "netty-transport", "geronimo-annotation-1.3-spec",
]  # fmt: skip
CLASSPATH = ":".join(str(DEBIAN_JARS / f"{jar}.jar") for jar in JARS)


@pytest.fixture(scope="module")
def java_example(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The classpath of the compiled example: its classes (in a temporary folder) and the jars."""
    javac = shutil.which("javac")
    missing = [tool for tool in ("javac", "java") if not shutil.which(tool)]
    missing += [f"{jar}.jar" for jar in JARS if not (DEBIAN_JARS / f"{jar}.jar").is_file()]
    if javac is None or missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: run `make tools` (scripts/install-system-deps.sh"
            " apt-installs openjdk-17-jdk-headless, libgrpc-java and the jars they need)"
        )
    classes = tmp_path_factory.mktemp("java")
    sources = [str(JAVA / "examples" / "Example.java")]
    sources += sorted(str(p) for p in (JAVA / "src" / "main" / "java").rglob("*.java"))
    built = subprocess.run(
        [javac, "-nowarn", "-encoding", "UTF-8", "-d", str(classes), "-cp", CLASSPATH, *sources],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    return f"{classes}:{CLASSPATH}"


async def test_the_java_example(start_gateway: StartGateway, java_example: str) -> None:
    address = await gateway_address(start_gateway)
    java = shutil.which("java")
    assert java is not None, "java is not installed"
    code, out, err = await run(java, "-cp", java_example, "Example", address, KEY, within=60)
    assert code == 0, err
    check(json.loads(out), "Java")
