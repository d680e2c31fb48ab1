"""The contract in protos/ passes `buf lint` and `buf build`; `buf breaking` (configured in
buf.yaml) passes against the last released contract, and catches a wire-breaking edit.
Drives the real buf binary from tools/ (`make tools`).

The last released contract is the commit named in protos/RELEASED: the contract callers build
on, which a release moves (when a release is cut, that file is set to the released commit). A
clone with `origin/main` is checked against where HEAD forked from main instead, which is never
older than the release, so a change is judged against what callers have, never against itself."""

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


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )


RELEASED = ROOT / "protos" / "RELEASED"


def released_commit() -> str:
    """The commit in protos/RELEASED: its one line that is not a `#` comment."""
    lines = [line.strip() for line in RELEASED.read_text().splitlines()]
    commits = [line for line in lines if line and not line.startswith("#")]
    assert len(commits) == 1, f"protos/RELEASED must name exactly one commit, not {commits}"
    return commits[0]


def released_contract() -> str:
    """The commit of the last released contract, or where HEAD forked from origin/main when the
    clone has one (module docstring)."""
    origin = git("rev-parse", "--verify", "--quiet", "origin/main")
    if origin.returncode == 0:
        return git("merge-base", "HEAD", origin.stdout.strip()).stdout.strip()
    return released_commit()


def test_buf_breaking_passes_against_the_last_released_contract(tmp_path: pathlib.Path) -> None:
    base = released_contract()
    if git("cat-file", "-e", f"{base}^{{commit}}").returncode != 0:
        pytest.fail(f"the released commit {base} is not in this clone's history (a shallow clone?)")
    assert git("merge-base", "--is-ancestor", base, "HEAD").returncode == 0, (
        f"{base} (protos/RELEASED) is not an ancestor of HEAD"
    )
    baseline = tmp_path / "released"
    baseline.mkdir()
    archive = subprocess.run(
        ["git", "archive", base, "buf.yaml", "protos"],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True, timeout=30)
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
