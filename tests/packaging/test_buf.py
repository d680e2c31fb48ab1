"""The contract in protos/ passes `buf lint` and `buf build`, and `buf breaking` (configured in
buf.yaml) catches a wire-breaking edit. Drives the real buf binary from tools/ (`make tools`)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest
from google.protobuf import descriptor_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOCAL_BUF = ROOT / "tools" / "node_modules" / ".bin" / "buf"


def buf_binary() -> str:
    found = shutil.which("buf") or (str(LOCAL_BUF) if LOCAL_BUF.exists() else None)
    if found is None:
        pytest.fail("buf is not installed: run `make tools` (npm ci --prefix tools)")
    return found


def buf(*args: str, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [buf_binary(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def copy_module(to: pathlib.Path) -> pathlib.Path:
    """buf.yaml and protos/ copied to a folder of their own."""
    to.mkdir()
    shutil.copy(ROOT / "buf.yaml", to / "buf.yaml")
    shutil.copytree(ROOT / "protos", to / "protos")
    return to


def test_buf_lint_passes() -> None:
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_build_makes_an_image_with_both_services(tmp_path: pathlib.Path) -> None:
    image = tmp_path / "image.binpb"
    result = buf("build", "-o", str(image))
    assert result.returncode == 0, result.stdout + result.stderr
    # A buf image is wire-compatible with a FileDescriptorSet.
    files = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes()).file
    services = {f"{f.package}.{s.name}" for f in files for s in f.service}
    assert {"hapax.v1.CompletionService", "hapax.v1.AdminService"} <= services


def test_buf_breaking_accepts_the_contract_against_itself(tmp_path: pathlib.Path) -> None:
    baseline = copy_module(tmp_path / "baseline")
    result = buf("breaking", str(ROOT), "--against", str(baseline))
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_rejects_a_removed_field(tmp_path: pathlib.Path) -> None:
    baseline = copy_module(tmp_path / "baseline")
    changed = copy_module(tmp_path / "changed")
    proto = changed / "protos" / "hapax" / "v1" / "completion_service.proto"
    text = proto.read_text()
    field = "  string user = 8;\n"
    assert field in text, "the test's chosen field is gone from the contract; pick another"
    proto.write_text(text.replace(field, "", 1))

    result = buf("breaking", str(changed), "--against", str(baseline))
    output = result.stdout + result.stderr
    assert result.returncode != 0, "buf breaking let a deleted field through:\n" + output
    assert '"user"' in output and "deleted" in output, output
