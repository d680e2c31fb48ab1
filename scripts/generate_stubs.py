"""Generate the client stubs for protos/: Python into clients/python/ (grpcio-tools), and
TypeScript into clients/typescript/src/gen/ (`buf generate` with buf.gen.yaml: protoc-gen-es,
with the google.rpc and grpc.health protos of third_party/protos). A folder given as argv[1]
receives both instead, under the same relative paths.

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


if __name__ == "__main__":
    if len(sys.argv) > 1:
        generate(pathlib.Path(sys.argv[1]) / "clients" / "python")
        generate_typescript(pathlib.Path(sys.argv[1]))
    else:
        generate(DEFAULT_OUT)
        generate_typescript(ROOT)
