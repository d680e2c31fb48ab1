"""The README's metrics table (## Observability) is what /metrics exports: a real gateway takes a
representative set of calls (a failover, a stream, an invalid request, a rate-limited call, a
rate-limit store and a budget store that cannot be reached, a reload, a response cache miss
and hit), so that every family has
samples; then every `hapax_*` family on /metrics is a row of the table with exactly its label
names, and every row of the table is on /metrics."""

from __future__ import annotations

import re
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hapax.v1 import completion_service_pb2 as pb
from tests.admission.conftest import OPS_KEY, SEARCH_KEY, bearer, keys
from tests.fakes.upstream import Fail, FakeUpstream, Reply
from tests.observability.conftest import Observe, openai_provider, settings_with
from tests.support.processes import free_port
from tests.support.readme import README

SECTION = "## Observability"
HEADER = "| metric | labels | meaning |"
# A row: the metric in backticks, its label names in backticks (comma-separated) or "none".
ROW = re.compile(r"\| `(?P<metric>hapax_\w+)` \| (?P<labels>none|`\w+`(?:, `\w+`)*) \| .+ \|")
# Labels prometheus_client adds to a family's samples by type, not the gateway's own.
TYPE_LABELS = frozenset({"le", "quantile"})

Families = dict[str, frozenset[str]]


def readme_table() -> Families:
    """metric name -> label names, from the table of the README's Observability section."""
    text = README.read_text()
    body = text[text.index(SECTION) :]
    body = body[: body.index("\n## ", len(SECTION))]
    lines = body.splitlines()
    at = lines.index(HEADER) + 2  # past the header and its | --- | line
    table: Families = {}
    for line in lines[at:]:
        if not line.startswith("|"):
            break
        row = ROW.fullmatch(line)
        assert row is not None, f"a README metrics row not in the form `{ROW.pattern}`: {line}"
        metric, labels = row["metric"], row["labels"]
        assert metric not in table, f"{metric} has two rows in the README"
        table[metric] = (
            frozenset() if labels == "none" else frozenset(re.findall(r"`(\w+)`", labels))
        )
    assert table, "no metrics table in the README's Observability section"
    return table


def exported(text: str) -> Families:
    """metric name (as the README names it: counters with `_total`) -> the label names of its
    samples, for each `hapax_*` family of a /metrics body."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("hapax_"):
            continue
        name = family.name + "_total" if family.type == "counter" else family.name
        assert family.samples, f"{name} has no sample: the test's traffic should make one"
        labels = found.setdefault(name, set())
        for sample in family.samples:
            labels.update(set(sample.labels) - TYPE_LABELS)
    return {name: frozenset(labels) for name, labels in found.items()}


def differences(table: Families, metrics: Families) -> list[str]:
    """Where the README's table and /metrics disagree, one line each (none when they agree)."""
    found = [f"{name} is exported but not in the README" for name in sorted(metrics - table.keys())]
    found += [
        f"{name} is in the README but not exported" for name in sorted(table - metrics.keys())
    ]
    for name in sorted(table.keys() & metrics.keys()):
        if table[name] != metrics[name]:
            found.append(
                f"{name}: the README lists labels {sorted(table[name])}, "
                f"/metrics has {sorted(metrics[name])}"
            )
    return found


def test_differences_sees_a_missing_row_a_missing_label_and_an_extra_row() -> None:
    metrics = {"hapax_a_total": frozenset({"x", "y"}), "hapax_b": frozenset()}
    assert differences(dict(metrics), metrics) == []
    assert differences({"hapax_b": frozenset()}, metrics) == [
        "hapax_a_total is exported but not in the README"
    ]
    assert differences({**metrics, "hapax_a_total": frozenset({"x"})}, metrics) == [
        "hapax_a_total: the README lists labels ['x'], /metrics has ['x', 'y']"
    ]
    assert differences({**metrics, "hapax_c": frozenset()}, metrics) == [
        "hapax_c is in the README but not exported"
    ]


async def test_the_readme_metrics_table_lists_every_exported_series_with_its_labels(
    observe: Observe, fake_upstream: FakeUpstream
) -> None:
    chat = "openai.chat"
    config: dict[str, Any] = {
        "providers": [
            openai_provider(fake_upstream, "primary"),
            openai_provider(fake_upstream, "backup"),
        ],
        "provider_preference": ["primary", "backup"],
        "circuit_breaker": {"failure_threshold": 2, "timeout": "1h"},
        "router": {"retry": {"max_attempts": 2, "initial_backoff": "1ms", "max_backoff": "2ms"}},
        "auth": {"keys": keys(search={"requests_per_minute": 2})},
        "prices": {"models": {"*": {"prompt": 1, "completion": 1}}},
        "cache": {"models": {"*": {"semantic": {"embedding_model": "embedder"}}}},
    }
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens here
    observed = await observe(
        settings_with(
            **config,
            rate_limit={"backend": "redis", "redis_url": nowhere, "on_store_error": "open"},
            budgets={
                "backend": "redis",
                "redis_url": nowhere,
                "on_store_error": "open",
                "limits": [{"name": "all", "key": "search", "tokens": 10**9, "window": "total"}],
            },
        )
    )
    stub, search, ops = observed.stub, bearer(SEARCH_KEY), bearer(OPS_KEY)

    # The stores cannot be asked (admitted, fail open); primary fails twice: a retry, its breaker
    # opens, a failover to backup.
    fake_upstream.script(chat, Fail(500), Fail(500), Reply(prompt_tokens=3, chunks=2))
    reply = await stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=search)
    assert reply.route.provider == "backup"

    # A reload onto the in-process store, where `search` has 2 requests a minute.
    assert await observed.app.reload_from(lambda: settings_with(**config), "test")
    async for _ in stub.StreamComplete(pb.StreamCompleteRequest(prompt="a b c"), metadata=search):
        pass
    await stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=search)
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await stub.Complete(pb.CompleteRequest(prompt="hi"), metadata=search)
    assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.Complete(pb.CompleteRequest(), metadata=ops)
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    # The response cache: the embedding of a semantic lookup fails (a miss); the answer is
    # stored; the same request again is a hit, which saved what the first cost.
    fake_upstream.script("openai.embeddings", Fail(400), Fail(400))
    cacheable = pb.CompleteRequest(prompt="cache me", temperature=0)
    await stub.Complete(cacheable, metadata=ops)
    await observed.app.generations.current.cache.state.drain()
    await stub.Complete(cacheable, metadata=ops)

    samples = await observed.samples()
    assert samples.value("hapax_rate_limiter_errors_total", backend="redis", outcome="admitted")
    assert samples.value("hapax_budget_store_errors_total", backend="redis", outcome="admitted")
    assert samples.value("hapax_cache_lookups_total", result="hit") == 1
    assert samples.value("hapax_cache_errors_total", backend="local", operation="embed")
    assert samples.value("hapax_failovers_total", **{"from": "primary", "to": "backup"}) == 1
    assert samples.value("hapax_config_reloads_total", outcome="success") == 1
    assert samples.value(
        "hapax_rate_limit_hits_total", client="search", limit="requests_per_minute"
    )

    problems = differences(readme_table(), exported(samples.text))
    assert not problems, "README.md's metrics table (## Observability) is wrong:\n" + "\n".join(
        problems
    )
