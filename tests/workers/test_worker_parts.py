"""The parts of `serve --workers` on their own: how many workers `auto` means (affinity and the
cgroup CPU limit), the metrics sum (counters summed and kept past a worker's death, gauges by
their rule), and what `check-config` says a setting means with several workers."""

from __future__ import annotations

import contextlib
import io
import pathlib

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hapaxd.__main__ import main
from hapaxd.workers import cores
from hapaxd.workers.metrics_sum import MetricsSum
from hapaxd.workers.sharing import notes
from tests.admission.conftest import keys
from tests.conftest import make_settings


def test_auto_is_the_cores_this_process_may_use_within_its_cgroup_limit(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda _: {0, 1, 2, 3})
    assert cores.usable_cores(tmp_path) == 4  # no cgroup files: the affinity
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert cores.usable_cores(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cores.usable_cores(tmp_path) == 4
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")  # cgroup v1, half a CPU
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cores.usable_cores(tmp_path) == 1
    monkeypatch.setattr(cores, "usable_cores", lambda: 3)
    assert cores.workers_of("auto") == 3 and cores.workers_of(2) == 2


def _worker(calls: int, active: int, state: int, started: float) -> str:
    registry = CollectorRegistry()
    Counter("hapax_grpc_requests", "calls", ["method"], registry=registry).labels("Complete").inc(
        calls
    )
    Gauge("hapax_grpc_active_requests", "active", registry=registry).set(active)
    breaker = Gauge("hapax_circuit_breaker_state", "state", ["provider"], registry=registry)
    breaker.labels("up").set(state)
    Gauge("process_start_time_seconds", "start", registry=registry).set(started)
    Histogram("hapax_latency_seconds", "latency", buckets=(1.0,), registry=registry).observe(calls)
    return generate_latest(registry).decode()


def _values(summed: MetricsSum) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(summed)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {
        s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_and_histograms_are_summed_and_a_dead_workers_counts_stay() -> None:
    summed = MetricsSum()
    summed.update(101, _worker(calls=3, active=2, state=0, started=50.0))
    summed.update(102, _worker(calls=4, active=1, state=2, started=40.0))
    values = _values(summed)
    assert values["hapax_grpc_requests_total{method=Complete}"] == 7
    assert values["hapax_grpc_active_requests"] == 3  # held or in flight: summed
    assert values["hapax_circuit_breaker_state{provider=up}"] == 2  # a state: the worst
    assert values["process_start_time_seconds"] == 40.0  # a time: the earliest
    assert values["hapax_latency_seconds_count"] == 2 and values["hapax_latency_seconds_sum"] == 7
    summed.retire(102)  # worker 102 died; 103 replaces it, counting from zero
    summed.update(103, _worker(calls=1, active=0, state=0, started=60.0))
    values = _values(summed)
    assert values["hapax_grpc_requests_total{method=Complete}"] == 3 + 4 + 1  # never backwards
    assert values["hapax_grpc_active_requests"] == 2  # the dead worker's gauges left
    assert values["hapax_circuit_breaker_state{provider=up}"] == 0
    assert values["hapax_latency_seconds_count"] == 3
    for pid in range(200, 260):  # many workers come and go: the retired counts stay one set
        summed.update(pid, _worker(calls=1, active=0, state=0, started=60.0))
        summed.retire(pid)
    assert len(summed._retired) == len(_values(summed)) - 3  # per series, not per worker
    assert _values(summed)["hapax_grpc_requests_total{method=Complete}"] == 8 + 60


def test_check_config_says_what_several_workers_share_and_what_they_do_not() -> None:
    limited = keys(search={"requests_per_minute": 10})
    local = make_settings(
        server={"workers": 4},
        auth={"keys": limited},
        cache={"models": {"*": {}}},
        budgets={"limits": [{"name": "b", "key": "search", "money": "1", "window": "day"}]},
    )
    said = "\n".join(notes(local, 4))
    assert "rate_limit.backend is local" in said and "up to 4x" in said
    assert "budgets.backend is local" in said and "cache.backend is local" in said
    assert "each worker deduplicates" in said
    redis = {"backend": "redis", "redis_url": "redis://127.0.0.1:1/0"}
    shared = make_settings(
        server={"workers": 4},
        auth={"keys": limited},
        rate_limit=redis,
        cache={**redis, "models": {"*": {}}},
        budgets={
            **redis,
            "limits": [{"name": "b", "key": "search", "money": "1", "window": "day"}],
        },
    )
    said = "\n".join(notes(shared, 4))
    assert "is local" not in said and "each worker deduplicates" in said
    assert notes(local, 1) == []


def test_check_config_prints_the_workers_notes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "hapax.yaml"
    path.write_text(
        "server: {workers: 2}\n"
        "providers: [{name: local, type: local, models: {'*': local}}]\n"
        "default_model: default\nauth: {enabled: false}\n"
        "cache: {models: {'*': {}}}\n"
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["check-config", str(path)]) == 0
    assert "workers: 2 processes share the ports" in out.getvalue()
    assert "cache.backend is local" in out.getvalue()


FLAKY_WORKER = """
import json, os, sys, time
args = sys.argv[1:]
fd = int(args[args.index("--report-fd") + 1])
os.write(fd, (json.dumps({"pid": os.getpid(), "metrics_port": 0}) + "\\n").encode())
os.close(fd)
time.sleep(0.1)
sys.exit(3)  # dies soon after it served, every time
"""


@pytest.mark.external  # the supervisor starts processes (a stand-in worker)
async def test_a_worker_that_keeps_dying_is_restarted_later_each_time(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor with a stand-in for `hapaxd worker` that serves and dies at once: each
    restart waits twice as long as the last (0.5, 1, 2 s), and each is counted."""
    import asyncio
    import logging
    import re
    import sys
    import time

    from hapaxd.workers.supervisor import Supervisor

    script = tmp_path / "flaky.py"
    script.write_text(FLAKY_WORKER)
    settings = make_settings(
        server={"address": "127.0.0.1:0", "grace_period": "1s"}, metrics={"enabled": False}
    )
    supervisor = Supervisor(settings, "", 1, command=lambda: [sys.executable, str(script)])
    caplog.set_level(logging.INFO, logger="hapaxd.workers")
    running = asyncio.create_task(supervisor.run())
    began = time.monotonic()
    for _ in range(300):  # 15 s at most
        if supervisor.restarts._value.get() >= 3:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.05)
    assert supervisor.restarts._value.get() >= 3, caplog.text  # type: ignore[attr-defined]
    elapsed = time.monotonic() - began
    supervisor._stopping.set()
    assert await asyncio.wait_for(running, 15) is None
    delays = [float(d) for d in re.findall(r"restarting it in ([\d.]+)s", caplog.text)]
    assert delays[:3] == [0.5, 1.0, 2.0], caplog.text
    assert elapsed >= 0.5 + 1.0  # the first two waits were waited (the third was counted)
    assert "exited with status 3" in caplog.text


async def test_a_worker_stops_when_its_supervisor_goes_even_after_a_collection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's gateway (app.serve with a lifeline, as workers/worker.py runs it) stops when
    the supervisor's end of the pipe closes, also after the garbage collector ran: the loop keeps
    only a weak reference to the task reading the pipe (a worker once outlived its supervisor
    that way)."""
    import asyncio
    import gc
    import os

    from hapaxd import app
    from hapaxd.workers.worker import _lifeline

    monkeypatch.setattr(app, "tune_garbage_collector", lambda: None)  # process-wide: not here
    monkeypatch.setattr(app.signal, "signal", lambda *_: None)  # nor a worker's SIGINT ignored
    read_end, write_end = os.pipe()
    started = asyncio.Event()
    settings = make_settings(
        server={"address": "127.0.0.1:0", "grace_period": "100ms"}, metrics={"enabled": False}
    )
    serving = asyncio.create_task(
        app.serve(
            settings,
            worker=0,
            started=lambda _: started.set(),
            lifeline=lambda: _lifeline(read_end),
        )
    )
    try:
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.sleep(0.1)
        gc.collect()
    finally:
        os.close(write_end)  # the supervisor is gone
    await asyncio.wait_for(serving, 10)
