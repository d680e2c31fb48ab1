"""The committed Python stubs are exactly what scripts/generate_stubs.py makes from protos/.

Change a .proto, run `make generate`, commit both; this test fails on any drift."""

from __future__ import annotations

import difflib
import importlib.util
import pathlib
from types import ModuleType

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "clients" / "python" / "hapax" / "v1"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_stubs", ROOT / "scripts" / "generate_stubs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regenerated_stubs_equal_the_committed_ones(tmp_path: pathlib.Path) -> None:
    load_generator().generate(tmp_path)
    fresh_dir = tmp_path / "hapax" / "v1"
    fresh = {p.name: p for p in fresh_dir.iterdir() if p.is_file()}
    assert fresh, "generate() wrote nothing"

    drift = []
    for name, path in sorted(fresh.items()):
        committed = COMMITTED / name
        if not committed.exists():
            drift.append(f"{name}: generated but not committed")
            continue
        new, old = path.read_text(), committed.read_text()
        if new != old:
            diff = difflib.unified_diff(
                old.splitlines(keepends=True),
                new.splitlines(keepends=True),
                f"committed/{name}",
                f"generated/{name}",
                n=1,
            )
            drift.append("".join(list(diff)[:40]))
    for committed in sorted(COMMITTED.glob("*_pb2*")):
        if committed.name not in fresh:
            drift.append(f"{committed.name}: committed but no longer generated")

    assert not drift, "stubs drifted from protos/; run `make generate`:\n" + "\n".join(drift)


def test_every_proto_has_its_three_stub_files() -> None:
    for proto in (ROOT / "protos" / "hapax" / "v1").glob("*.proto"):
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert (COMMITTED / f"{proto.stem}{suffix}").is_file(), f"{proto.stem}{suffix}"


TYPESCRIPT = ROOT / "clients" / "typescript" / "src" / "gen"


def test_regenerated_typescript_stubs_equal_the_committed_ones(tmp_path: pathlib.Path) -> None:
    """`buf generate` (buf.gen.yaml, protoc-gen-es from tools/) into a temporary folder."""
    load_generator().generate_typescript(tmp_path)
    fresh_root = tmp_path / "clients" / "typescript" / "src" / "gen"
    fresh = {p.relative_to(fresh_root): p for p in fresh_root.rglob("*.ts")}
    committed = {p.relative_to(TYPESCRIPT): p for p in TYPESCRIPT.rglob("*.ts")}
    assert pathlib.Path("hapax/v1/completion_service_pb.ts") in fresh
    assert set(fresh) == set(committed), "files differ; run `make generate`"
    drift = [
        str(name) for name, path in fresh.items() if path.read_text() != committed[name].read_text()
    ]
    assert not drift, "TypeScript stubs drifted from protos/; run `make generate`: " + ", ".join(
        drift
    )


GO = ROOT / "clients" / "go" / "hapax" / "v1"


def test_regenerated_go_stubs_equal_the_committed_ones(tmp_path: pathlib.Path) -> None:
    """protoc with Debian's protoc-gen-go and protoc-gen-go-grpc into a temporary folder."""
    load_generator().generate_go(tmp_path)
    fresh_dir = tmp_path / "clients" / "go" / "hapax" / "v1"
    fresh = {p.name: p for p in fresh_dir.glob("*.go")}
    committed = {p.name: p for p in GO.glob("*.go")}
    assert "completion_service_grpc.pb.go" in fresh
    assert set(fresh) == set(committed), "files differ; run `make generate`"
    drift = [
        name for name, path in fresh.items() if path.read_text() != committed[name].read_text()
    ]
    assert not drift, "Go stubs drifted from protos/; run `make generate`: " + ", ".join(drift)


JAVA = ROOT / "clients" / "java" / "src" / "main" / "java"


def test_regenerated_java_stubs_equal_the_committed_ones(tmp_path: pathlib.Path) -> None:
    """protoc with Debian's grpc_java_plugin into a temporary folder."""
    load_generator().generate_java(tmp_path)
    fresh_root = tmp_path / "clients" / "java" / "src" / "main" / "java"
    fresh = {p.relative_to(fresh_root): p for p in fresh_root.rglob("*.java")}
    committed = {p.relative_to(JAVA): p for p in JAVA.rglob("*.java")}
    assert pathlib.Path("dev/hapax/v1/CompletionServiceGrpc.java") in fresh
    assert pathlib.Path("io/grpc/health/v1/HealthGrpc.java") in fresh
    assert set(fresh) == set(committed), "files differ; run `make generate`"
    drift = [
        str(name) for name, path in fresh.items() if path.read_text() != committed[name].read_text()
    ]
    assert not drift, "Java stubs drifted from protos/; run `make generate`: " + ", ".join(drift)
