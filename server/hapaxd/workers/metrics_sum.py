"""The one metrics endpoint of `serve --workers`: each worker's series, scraped from its own
loopback side port, summed into one set the supervisor serves.

- Counters, histograms and summaries are summed. A worker that exits (or is restarted) leaves
  the counts it had at its last scrape behind as "retired" counts, added to every later sum, so
  the whole stays monotonic across restarts; they are kept per series, not per worker, so
  nothing grows with the number of workers ever started. The supervisor scrapes every few
  seconds, so a worker that crashes loses at most the counts since then; one that stops
  normally is scraped once more first.
- Gauges that count something held or in flight (calls, bytes, memory) are summed; gauges that
  state something take the worst or the oldest: a breaker's state the highest of the workers',
  a provider's health and the healthy-provider count the lowest, the last reload time and the
  start time the earliest, the fd limit and build info the highest (GAUGE_RULES).

Plain Python over prometheus_client's parser; no grpc.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

SUMMED_TYPES = frozenset({"counter", "histogram", "summary", "gaugehistogram"})
GAUGE_RULES: dict[str, Any] = {
    "hapax_circuit_breaker_state": max,
    "hapax_provider_healthy": min,
    "hapax_healthy_providers": min,
    "hapax_config_last_reload_success_timestamp_seconds": min,
    "process_start_time_seconds": min,
    "process_max_fds": max,
    "python_info": max,
}

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


class Family:
    __slots__ = ("documentation", "name", "type", "unit")

    def __init__(self, name: str, kind: str, documentation: str, unit: str) -> None:
        self.name, self.type, self.documentation, self.unit = name, kind, documentation, unit


class MetricsSum:
    """A prometheus_client collector of the workers' series, summed (module docstring)."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}  # by family name, in the order first seen
        self._samples: dict[str, list[tuple[str, SeriesKey, float]]] = {}  # family -> samples
        self._live: dict[int, dict[SeriesKey, tuple[str, float]]] = {}  # pid -> key -> (fam, v)
        self._retired: dict[SeriesKey, tuple[str, float]] = {}

    def update(self, worker: int, text: str) -> None:
        """The series worker (process id) `worker` exposes now, in the text format."""
        seen: dict[SeriesKey, tuple[str, float]] = {}
        for family in text_string_to_metric_families(text):
            if family.name not in self._families:
                self._families[family.name] = Family(
                    family.name, family.type, family.documentation, family.unit
                )
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen[key] = (family.name, float(sample.value))
        self._live[worker] = seen

    def retire(self, worker: int) -> None:
        """Worker `worker` is gone: its counts stay in the sum, its gauges leave it."""
        gone = self._live.pop(worker, {})
        for key, (family, value) in gone.items():
            if self._families[family].type in SUMMED_TYPES:
                _, before = self._retired.get(key, (family, 0.0))
                self._retired[key] = (family, before + value)

    @property
    def workers(self) -> list[int]:
        return list(self._live)

    def describe(self) -> Iterable[Metric]:
        return []  # unknown until the first scrape: never checked for duplicates

    def collect(self) -> Iterator[Metric]:
        values: dict[SeriesKey, list[float]] = {}
        owner: dict[SeriesKey, str] = {}
        for series in self._live.values():
            for key, (family, value) in series.items():
                values.setdefault(key, []).append(value)
                owner[key] = family
        for key, (family, _) in self._retired.items():
            owner[key] = family
            values.setdefault(key, [])
        by_family: dict[str, list[tuple[SeriesKey, float]]] = {}
        for key, found in values.items():
            kind = self._families[owner[key]]
            if kind.type in SUMMED_TYPES:
                total = sum(found) + self._retired.get(key, ("", 0.0))[1]
            elif not found:
                continue
            else:
                total = GAUGE_RULES.get(kind.name, sum)(found)
            by_family.setdefault(kind.name, []).append((key, total))
        for name, kind in self._families.items():
            samples = by_family.get(name)
            if not samples:
                continue
            metric = Metric(name, kind.documentation, kind.type, kind.unit)
            for (sample, labels), value in samples:
                metric.add_sample(sample, dict(labels), value)
            yield metric
