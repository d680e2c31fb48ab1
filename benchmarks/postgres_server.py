"""A real PostgreSQL server (the Debian package `postgresql`) on a free loopback port, its data in
a temporary directory, for benchmarks/ledger_postgres.py and benchmarks/ledger.py (`--per-call
--backend postgres`) and for the tests of the ledger's PostgresStore (tests/support/postgres.py
adds their fixtures). `make tools` installs it.

initdb and the server refuse to run as root; as root (CI, containers) both run as an
unprivileged user (`postgres` if there is one, else `nobody`) through subprocess's user=, in a
directory that user owns. The superuser is `postgres`, trusted on loopback: no password.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
from typing import Any

import psycopg

from benchmarks.harness import free_port

PROGRAMS = ("initdb", "pg_ctl")
MISSING = (
    "PostgreSQL's initdb and pg_ctl are not installed; run `make tools` "
    "(Debian: apt-get install postgresql)"
)
# Tests need no durability: a crash of the throwaway server loses nothing anyone keeps.
NOT_DURABLE = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")


class PostgresMissing(RuntimeError):
    """No initdb or pg_ctl on this machine."""


def find_bindir() -> pathlib.Path:
    """The directory holding initdb and pg_ctl: `pg_config --bindir`, else the newest
    /usr/lib/postgresql/*/bin (Debian keeps them off PATH), else PATH."""
    candidates: list[pathlib.Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            )
            candidates.append(pathlib.Path(found.stdout.strip()))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [pathlib.Path(p) for p in sorted(versions, key=_version, reverse=True)]
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(pathlib.Path(initdb).resolve().parent)
    for directory in candidates:
        if all((directory / program).is_file() for program in PROGRAMS):
            return directory
    raise PostgresMissing(MISSING)


def _version(path: str) -> tuple[int, ...]:
    number = pathlib.Path(path).parent.name
    return tuple(int(part) for part in number.split(".") if part.isdigit())


class PostgresServer:
    """One server: `start` makes its data directory (the first time) and starts it, `stop`
    stops it (it can start again, on the same port), `remove` stops it and deletes its files.
    `durable` False (tests): no fsync. `cpus`: the CPUs its processes may run on (a benchmark
    keeps it off the gateway's); None: any."""

    def __init__(self, *, durable: bool = False, cpus: set[int] | None = None) -> None:
        self.bindir = find_bindir()
        self.port = free_port()
        self.durable = durable
        self.cpus = cpus
        self.user = "postgres"  # the database superuser
        self.directory = pathlib.Path(tempfile.mkdtemp(prefix="hapax-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._as = _unprivileged()
            os.chown(self.directory, self._as["user"], self._as["group"])
        self._names = itertools.count(1)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if not self.data.exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
        options = [
            f"-p {self.port}",
            f"-k {self.directory}",  # its Unix socket here, not in /var/run/postgresql
            "-c listen_addresses=127.0.0.1",
            *(() if self.durable else NOT_DURABLE),
        ]
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
            "-o", " ".join(options), cpus=self.cpus,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" (connections cut, a clean shutdown) or "immediate"."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "30")

    def remove(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (named `name`, else db1, db2...); its DSN."""
        name = name or f"db{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')  # psycopg cannot bind an identifier
        return self.dsn(name)

    def _run(self, program: str, *args: str, cpus: set[int] | None = None) -> None:
        """Run one of the server's programs; with `cpus`, it and what it starts (the server's
        processes inherit it) on those CPUs only."""
        pinned = None if cpus is None else lambda: os.sched_setaffinity(0, cpus)
        done = subprocess.run(
            [str(self.bindir / program), *args],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=pinned,  # affinity only: nothing there takes a lock
            **self._as,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{program} {' '.join(args)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}{log}"
            )


def _unprivileged() -> dict[str, Any]:
    """subprocess.run's arguments that run a program as `postgres`, else `nobody`."""
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root, and there is no postgres or nobody user to run as")
