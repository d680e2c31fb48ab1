"""Generate the client stubs for protos/: Python into clients/python/ (grpcio-tools),
TypeScript into clients/typescript/src/gen/ (`buf generate` with buf.gen.yaml: protoc-gen-es,
with the google.rpc and grpc.health protos of third_party/protos), and Go into
clients/go/hapax/v1/ (Debian's protoc with protoc-gen-go and protoc-gen-go-grpc; package
github.com/hapax/hapax/gen/go/hapax/v1), and Java into clients/java/src/main/java/ (Debian's protoc
with its grpc-java plugin, grpc_java_plugin; package dev.hapax.v1, with the google.rpc and
grpc.health protos of third_party/protos, which Debian's jars lack). A folder given as argv[1]
receives them instead, under the same relative paths.

`make generate` runs this; tests/packaging/test_generated_stubs.py runs it into a temporary
folder and fails on any difference from what is committed, so generated code is never edited by
hand.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "clients" / "python"
TYPESCRIPT_OUT = pathlib.Path("clients") / "typescript" / "src" / "gen"  # buf.gen.yaml's `out`
BUF = ROOT / "tools" / "node_modules" / ".bin" / "buf"
GO_OUT = pathlib.Path("clients") / "go"
GO_MODULE = "github.com/hapax/hapax/gen/go"  # the protos' go_package, less hapax/v1
JAVA_OUT = pathlib.Path("clients") / "java" / "src" / "main" / "java"
THIRD_PARTY = ROOT / "third_party" / "protos"
# What the Java client needs besides hapax.v1: error details and the health service (Debian has
# no grpc-services jar, and its proto-google-common-protos is too old to have ErrorInfo).
JAVA_THIRD_PARTY = [
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
    "grpc/health/v1/health.proto",
]


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def generate(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generate_typescript(base: pathlib.Path) -> None:
    """buf.gen.yaml's plugins, writing under `base` (the repository root, or a test's folder)."""
    buf = shutil.which("buf") or (str(BUF) if BUF.exists() else None)
    if buf is None:
        raise SystemExit("buf is not installed: run `make tools`")
    shutil.rmtree(base / TYPESCRIPT_OUT, ignore_errors=True)  # no stale file survives
    subprocess.run(
        [buf, "generate", "--template", "buf.gen.yaml", "-o", str(base)],
        cwd=ROOT,
        check=True,
        timeout=120,
    )


def generate_go(base: pathlib.Path) -> None:
    """protoc's Go plugins, writing base/clients/go/hapax/v1/."""
    missing = [t for t in ("protoc", "protoc-gen-go", "protoc-gen-go-grpc") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not installed: run `make tools`")
    out = base / GO_OUT
    shutil.rmtree(out / "hapax" / "v1", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"--go_out={out}",
            f"--go_opt=module={GO_MODULE}",
            f"--go-grpc_out={out}",
            f"--go-grpc_opt=module={GO_MODULE}",
            *proto_files(),
        ],
        cwd=ROOT,
        check=True,
        timeout=120,
    )


def generate_java(base: pathlib.Path) -> None:
    """protoc's Java output and grpc-java's plugin, writing base/clients/java/src/main/java/."""
    missing = [t for t in ("protoc", "grpc_java_plugin") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not installed: run `make tools`")
    out = base / JAVA_OUT
    shutil.rmtree(out, ignore_errors=True)  # no stale file survives
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{THIRD_PARTY}",
            f"--plugin=protoc-gen-grpc-java={shutil.which('grpc_java_plugin')}",
            f"--java_out={out}",
            f"--grpc-java_out={out}",
            *proto_files(),
            *JAVA_THIRD_PARTY,
        ],
        cwd=ROOT,
        check=True,
        timeout=120,
    )


if __name__ == "__main__":
    base = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    generate(base / "clients" / "python" if len(sys.argv) > 1 else DEFAULT_OUT)
    generate_typescript(base)
    generate_go(base)
    generate_java(base)
