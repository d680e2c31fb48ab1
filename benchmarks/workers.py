"""Does a second worker process double what one gateway serves? `hapaxd serve --workers 1` and
`--workers 2`, as operators run them (default config: metrics, the access log at info, the usage
ledger), each in front of the same cheap upstream (benchmarks/http_clients.py's raw asyncio
HTTP/1.1 server answering a chat completion), driven in alternating rounds by h2load with enough
connections for the kernel to spread them over the workers (SO_REUSEPORT). Nothing is pinned:
the workers may use every core, and h2load and the upstream share them, as on a real host.

Figures per variant: requests per second (calls the gateway counted OK, over h2load's time),
server CPU per call (the supervisor and every worker, from /proc), and the machine's busy share.
The aim (issue 23): with 2 workers on this 2-core machine, at least 1.7x the single worker's
requests per second, and no more CPU per call.

    python -m benchmarks.workers [--quick] [--json PATH] [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pathlib
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from benchmarks.harness import environment, free_port
from benchmarks.report import figure as _f

AIM_RPS = 1.7
AIM_CPU = 1.0  # CPU per call with 2 workers over 1, at most (beyond the run's noise)
VARIANTS = (1, 2)
CALLS = re.compile(r'^hapax_grpc_requests_total\{code="(\w+)",method="Complete"\} (\S+)$', re.M)


@dataclasses.dataclass
class Config:
    rounds: int = 5
    duration: float = 3.0
    warmup: float = 0.5
    clients: int = 32  # connections
    streams: int = 4  # calls in flight on each
    upstream: str = "nginx"  # see UPSTREAMS

    @classmethod
    def quick(cls) -> Config:
        return cls(rounds=1, duration=1.0, warmup=0.2, clients=8, streams=2)


@contextlib.contextmanager
def python_upstream() -> Iterator[tuple[int, int]]:
    """The raw fake upstream (benchmarks/http_clients.py) in a process of its own: (port, pid)."""
    from benchmarks.http_clients import Process

    process = Process("upstream", "upstream", None)
    try:
        yield int(process.wait_ready()), process.pid
    finally:
        process.stop()


NGINX = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_upstream() -> Iterator[tuple[int, int]]:
    """Debian's nginx answering every chat completion with the same body, in one process of its
    own (no master): an upstream that costs the shared machine next to nothing. (port, pid)"""
    from benchmarks.fake_upstream import COMPLETION

    binary = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if binary is None:
        raise SystemExit("nginx is not installed (Debian package nginx; make tools)")
    assert b"'" not in COMPLETION
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        prefix = pathlib.Path(scratch)
        config = prefix / "nginx.conf"
        config.write_text(NGINX.format(prefix=prefix, port=port, body=COMPLETION.decode()))
        proc = subprocess.Popen(
            [binary, "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            _wait_answering(port, proc)
            yield port, proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


def _wait_answering(port: int, proc: subprocess.Popen[bytes], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(OSError):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/chat/completions", data=b"{}", method="POST"
            )
            with urllib.request.urlopen(request, timeout=2) as answer:
                answer.read()
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("nginx did not start")
        time.sleep(0.05)


UPSTREAMS = {"nginx": nginx_upstream, "python": python_upstream}


CONFIG = """\
server: {{address: "127.0.0.1:{port}", grace_period: 1s}}
metrics: {{address: "127.0.0.1:{metrics}"}}
logging: {{level: info}}
providers:
  - {{name: fake, type: openai, base_url: "http://127.0.0.1:{upstream}/v1",
      models: {{default: fake-model}}}}
default_model: default
health_check: {{enabled: false}}
auth: {{enabled: false}}
reload: {{watch: false}}
ledger: {{path: "{ledger}"}}
"""


class Gateway:
    """`hapaxd serve --workers N` in a process of its own (its log to a file, not read)."""

    def __init__(self, workers: int, upstream_port: int, directory: pathlib.Path) -> None:
        self.workers = workers
        self.port, self.metrics = free_port(), free_port()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "hapax.yaml"
        path.write_text(
            CONFIG.format(
                port=self.port,
                metrics=self.metrics,
                upstream=upstream_port,
                ledger=directory / "usage.db",
            )
        )
        self.log = directory / "gateway.log"
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hapaxd", "serve", "--config", str(path),
                 "--workers", str(workers)],
                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        want = f"with {self.workers} worker processes" if self.workers > 1 else "serving on port"
        while want not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        while True:  # the metrics endpoint answers too
            with contextlib.suppress(OSError):
                self.calls()
                return
            time.sleep(0.05)

    def calls(self) -> tuple[float, float]:
        """Complete calls the gateway has ended: (OK, any other status but CANCELLED)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5) as r:
            found = {code: float(n) for code, n in CALLS.findall(r.read().decode())}
        ok = found.pop("OK", 0.0)
        found.pop("CANCELLED", None)  # in flight when h2load's time ran out and it hung up
        return ok, sum(found.values())

    def pids(self) -> list[int]:
        """The supervisor and its workers (or the one process)."""
        found = [self.proc.pid]
        with contextlib.suppress(OSError):
            children = pathlib.Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            found += [int(p) for p in children.read_text().split()]
        return found

    def cpu_seconds(self) -> float:
        return sum(_cpu_of(pid) for pid in self.pids())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 when it is gone."""
    with contextlib.suppress(OSError):
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return 0.0


def _busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    fields = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _body(directory: pathlib.Path) -> pathlib.Path:
    from hapax.v1 import completion_service_pb2 as pb

    message = pb.CompleteRequest(prompt="Say hello to the benchmark.", max_tokens=16)
    data = message.SerializeToString()
    path = directory / "request.bin"
    path.write_bytes(b"\x00" + len(data).to_bytes(4, "big") + data)  # one gRPC frame
    return path


def load(
    gateway: Gateway, body: pathlib.Path, config: Config, duration: float, upstream_pid: int
) -> dict[str, Any]:
    """h2load against `gateway` for `duration` seconds; what the gateway counted, and the CPU
    h2load and the upstream took beside it (cores, over the round)."""
    h2load = shutil.which("h2load")
    if h2load is None:
        raise SystemExit("h2load is not installed (Debian package nghttp2-client; make tools)")
    (ok0, failed0), cpu0, (busy0, total0) = gateway.calls(), gateway.cpu_seconds(), _busy()
    loadgen0, upstream0 = resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_of(upstream_pid)
    t0 = time.monotonic()
    done = subprocess.run(
        [h2load, f"http://127.0.0.1:{gateway.port}/hapax.v1.CompletionService/Complete",
         "-c", str(config.clients), "-m", str(config.streams), "-t", "1",
         "-D", f"{duration:g}", "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers"],
        capture_output=True, text=True, timeout=duration + 60,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    loadgen, upstream_cpu = resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_of(upstream_pid)
    (ok, failed), cpu, (busy, total) = gateway.calls(), gateway.cpu_seconds(), _busy()
    loadgen_cpu = (loadgen.ru_utime + loadgen.ru_stime) - (loadgen0.ru_utime + loadgen0.ru_stime)
    calls = ok - ok0
    sent = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", done.stdout)
    return {
        "calls_ok": calls,
        "calls_failed": failed - failed0,
        "h2load_succeeded": int(sent.group(2)) if sent else 0,
        "rps": calls / elapsed if elapsed else 0.0,
        "cpu_us_per_call": (cpu - cpu0) / calls * 1e6 if calls else None,
        "machine_busy": (busy - busy0) / (total - total0) if total > total0 else None,
        "server_cores": (cpu - cpu0) / elapsed if elapsed else None,
        "loadgen_cores": loadgen_cpu / elapsed if elapsed else None,
        "upstream_cores": (upstream_cpu - upstream0) / elapsed if elapsed else None,
        "h2load_exit": done.returncode,
    }


def run(config: Config) -> dict[str, Any]:
    env = environment()
    samples: dict[int, list[dict[str, Any]]] = {n: [] for n in VARIANTS}
    serving = UPSTREAMS[config.upstream]
    with tempfile.TemporaryDirectory() as scratch, serving() as (upstream_port, upstream_pid):
        directory = pathlib.Path(scratch)
        body = _body(directory)
        gateways = {n: Gateway(n, upstream_port, directory / f"w{n}") for n in VARIANTS}
        try:
            for gateway in gateways.values():
                load(gateway, body, config, max(config.warmup, 0.2), upstream_pid)  # warm up
            for r in range(config.rounds):
                for n in VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS)):
                    samples[n].append(
                        load(gateways[n], body, config, config.duration, upstream_pid)
                    )
        finally:
            for gateway in gateways.values():
                gateway.stop()
    result: dict[str, Any] = {"config": dataclasses.asdict(config), "environment": env}
    for n in VARIANTS:
        result[f"workers_{n}"] = {
            "rps": statistics.median(s["rps"] for s in samples[n]),
            "cpu_us_per_call": statistics.median(s["cpu_us_per_call"] or 0.0 for s in samples[n]),
            "machine_busy": statistics.median(s["machine_busy"] or 0.0 for s in samples[n]),
            **{
                name: statistics.median(s[name] or 0.0 for s in samples[n])
                for name in ("server_cores", "loadgen_cores", "upstream_cores")
            },
            "calls_ok": sum(s["calls_ok"] for s in samples[n]),
            "calls_failed": sum(s["calls_failed"] for s in samples[n]),
            "h2load_succeeded": sum(s["h2load_succeeded"] for s in samples[n]),
            "rounds": samples[n],
        }
    pairs = list(zip(samples[1], samples[2], strict=True))
    rps = [b["rps"] / a["rps"] for a, b in pairs if a["rps"]]
    cpu = [
        b["cpu_us_per_call"] / a["cpu_us_per_call"]
        for a, b in pairs
        if a["cpu_us_per_call"] and b["cpu_us_per_call"]
    ]  # None when a round counted no CPU (ticks are 10 ms): a blind figure, not a ratio of 0
    result["rps_ratio"] = statistics.median(rps) if rps else None
    result["cpu_ratio"] = statistics.median(cpu) if cpu else None
    result["aims"] = {"rps_ratio_at_least": AIM_RPS, "cpu_ratio_at_most": AIM_CPU}
    return result


def format_table(result: dict[str, Any]) -> str:
    config = result["config"]
    lines = [
        f"Workers: 1 against 2 (h2load: {config['clients']} connections x {config['streams']} "
        f"streams, unpinned; median of {config['rounds']} alternating rounds of "
        f"{config['duration']:g} s)",
        "",
        f"{'workers':>8}{'rps':>10}{'srv us/call':>13}{'machine busy':>14}{'calls OK':>10}"
        f"{'cores: server':>15}{'h2load':>8}{'upstream':>10}",
    ]
    for n in VARIANTS:
        s = result[f"workers_{n}"]
        lines.append(
            f"{n:>8}{_f(s['rps'], '10.0f')}{_f(s['cpu_us_per_call'], '13.0f')}"
            f"{_f(s['machine_busy'] * 100, '13.0f')}%{s['calls_ok']:>10.0f}"
            f"{_f(s['server_cores'], '15.2f')}{_f(s['loadgen_cores'], '8.2f')}"
            f"{_f(s['upstream_cores'], '10.2f')}"
        )
    rps, cpu = result["rps_ratio"], result["cpu_ratio"]
    rps_met = "met" if rps is not None and rps >= AIM_RPS else "NOT MET"
    cpu_met = "met" if cpu is not None and cpu <= AIM_CPU else "NOT MET"
    lines.append(
        f"2 workers / 1: rps x{_f(rps, '.2f')} (aim >= {AIM_RPS}: {rps_met}), "
        f"CPU per call x{_f(cpu, '.3f')} (aim <= {AIM_CPU:g}: {cpu_met})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.workers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--rounds", type=int, help="rounds (default 5)")
    parser.add_argument("--clients", type=int, help="h2load connections (default 32)")
    parser.add_argument("--streams", type=int, help="calls in flight on each (default 4)")
    parser.add_argument(
        "--upstream", choices=sorted(UPSTREAMS), help="the fake upstream (default nginx)"
    )
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config()
    for name in ("rounds", "clients", "streams", "upstream"):
        if getattr(args, name):
            setattr(config, name, getattr(args, name))
    result = run(config)
    print(format_table(result))
    if args.json:
        from benchmarks.report import write_json

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
