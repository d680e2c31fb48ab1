"""Which vector index should the semantic cache keep in each process? numpy brute force over a
contiguous float32 matrix (as server/hapaxd/cache/semantic.py ships it, and bare) against the
approximate (HNSW) indexes of well-kept libraries from PyPI: faiss-cpu, hnswlib, usearch and
voyager, with faiss's exact flat index as a second brute force. For each: the time to add one
vector (the cache adds them one at a time; p50, p99), the time of one top-1 query (p50, p99) and
the CPU it takes (every thread's: numpy's OpenBLAS and faiss's OpenMP may use more than one core
for one query, the HNSW libraries are asked for one thread), recall@1 against exact search, and
the resident memory the index adds. Each library runs with its own default threading otherwise.

Vectors are random unit vectors. Half the queries are near copies of a stored vector (cosine
about 0.97, as a paraphrase the cache should find); half are fresh random vectors (a miss).
Recall@1 is how often the index's nearest is the exact nearest, for each half. Each cell runs
in its own process, so memory is that cell's alone: the growth of resident memory from just
before the index is made until every vector is in. A library that is not installed is skipped.

`python -m benchmarks.semantic_index` runs 1,000 and 10,000 vectors of 256, 768 and 1,536
dimensions, and 10,000 spread over 1,000 groups (the cache keeps one group per scope, settings
and guard terms); about 4.5 minutes on 2 CPUs. `--quick` runs 1,000 of 256 dimensions, for a
smoke run (seconds). `--entries 100000 --dims 768 --only ...` runs other sizes alone (no grouped
cells): beyond the cache's bound, to see where an HNSW index starts to pay; the HNSW libraries
take minutes to build 100,000 (about 13 minutes for 100,000 x 768 with hnswlib and usearch).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

NEAR_COSINE = 0.97  # the near queries' cosine with the vector they were made from
SEED = 22


class Index(Protocol):
    def add(self, key: int, vector: Any) -> None: ...
    def query(self, vector: Any) -> tuple[int, float]: ...  # the nearest key and its cosine


# --- the implementations (each imports its library when made) ------------------------------------


class NumpyFlat:
    """Brute force: a float32 matrix, grown by doubling; matrix @ query, argmax."""

    def __init__(self, dims: int, capacity: int) -> None:
        import numpy as np

        self.np = np
        self.matrix = np.empty((1, dims), dtype=np.float32)
        self.keys: list[int] = []

    def add(self, key: int, vector: Any) -> None:
        count = len(self.keys)
        if count == len(self.matrix):
            grown = self.np.empty((2 * count, self.matrix.shape[1]), dtype=self.np.float32)
            grown[:count] = self.matrix
            self.matrix = grown
        self.matrix[count] = vector
        self.keys.append(key)

    def query(self, vector: Any) -> tuple[int, float]:
        similarities = self.matrix[: len(self.keys)] @ vector
        best = int(similarities.argmax())
        return self.keys[best], float(similarities[best])


class Shipped:
    """hapaxd.cache.semantic.SemanticIndex: brute force plus its bookkeeping (keys, groups,
    eviction order, normalising each vector)."""

    def __init__(self, dims: int, capacity: int) -> None:
        from hapaxd.cache.semantic import SemanticIndex

        self.index = SemanticIndex(capacity)

    def add(self, key: int, vector: Any) -> None:
        self.index.add("scope", "shape", vector, (), str(key))

    def query(self, vector: Any) -> tuple[int, float]:
        found = self.index.nearest("scope", "shape", vector, (), -1.0)
        assert found is not None
        return int(found[0]), found[1]


class FaissFlat:
    """faiss IndexFlatIP: exact, BLAS."""

    def __init__(self, dims: int, capacity: int) -> None:
        import faiss

        self.index = faiss.IndexIDMap(faiss.IndexFlatIP(dims))
        self.np = importlib.import_module("numpy")

    def add(self, key: int, vector: Any) -> None:
        self.index.add_with_ids(vector[None, :], self.np.array([key], dtype=self.np.int64))

    def query(self, vector: Any) -> tuple[int, float]:
        similarities, keys = self.index.search(vector[None, :], 1)
        return int(keys[0][0]), float(similarities[0][0])


class FaissHNSW:
    """faiss IndexHNSWFlat, M 32, efConstruction 128, efSearch 64 (it cannot remove vectors)."""

    def __init__(self, dims: int, capacity: int) -> None:
        import faiss

        self.index = faiss.IndexHNSWFlat(dims, 32, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = 128
        self.index.hnsw.efSearch = 64

    def add(self, key: int, vector: Any) -> None:
        self.index.add(vector[None, :])  # keys are insertion order, as here

    def query(self, vector: Any) -> tuple[int, float]:
        similarities, keys = self.index.search(vector[None, :], 1)
        return int(keys[0][0]), float(similarities[0][0])


class Hnswlib:
    """hnswlib, M 16, ef_construction 200, ef 64 (removes by marking)."""

    def __init__(self, dims: int, capacity: int) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=dims)
        self.index.init_index(
            max_elements=capacity, ef_construction=200, M=16, allow_replace_deleted=True
        )
        self.index.set_ef(64)
        self.index.set_num_threads(1)

    def add(self, key: int, vector: Any) -> None:
        self.index.add_items(vector[None, :], [key])

    def query(self, vector: Any) -> tuple[int, float]:
        keys, distances = self.index.knn_query(vector[None, :], k=1)
        return int(keys[0][0]), 1.0 - float(distances[0][0])


class USearch:
    """usearch, connectivity 16, expansion_add 128, expansion_search 64 (removes)."""

    def __init__(self, dims: int, capacity: int) -> None:
        from usearch.index import Index as UIndex

        self.index = UIndex(
            ndim=dims,
            metric="ip",
            dtype="f32",
            connectivity=16,
            expansion_add=128,
            expansion_search=64,
        )

    def add(self, key: int, vector: Any) -> None:
        self.index.add(key, vector, threads=1)

    def query(self, vector: Any) -> tuple[int, float]:
        matches = self.index.search(vector, 1, threads=1)
        return int(matches.keys[0]), 1.0 - float(matches.distances[0])


class Voyager:
    """Spotify's voyager (hnswlib's algorithm), M 16, ef_construction 200, query_ef 64."""

    def __init__(self, dims: int, capacity: int) -> None:
        import voyager

        self.index = voyager.Index(
            voyager.Space.InnerProduct,
            num_dimensions=dims,
            M=16,
            ef_construction=200,
            max_elements=capacity,
        )

    def add(self, key: int, vector: Any) -> None:
        self.index.add_item(vector, key)

    def query(self, vector: Any) -> tuple[int, float]:
        keys, distances = self.index.query(vector, k=1, query_ef=64)
        return int(keys[0]), 1.0 - float(distances[0])


@dataclasses.dataclass(frozen=True)
class Implementation:
    make: Callable[[int, int], Index]
    package: str  # the PyPI distribution, for its version
    module: str  # what must import
    exact: bool
    removes: str  # how it forgets an entry (the cache evicts the oldest when full)


IMPLEMENTATIONS = {
    "semantic.py (numpy)": Implementation(
        Shipped, "numpy", "hapaxd.cache.semantic", True, "yes, swap last row"
    ),
    "numpy brute force": Implementation(NumpyFlat, "numpy", "numpy", True, "yes, swap last row"),
    "faiss flat": Implementation(FaissFlat, "faiss-cpu", "faiss", True, "remove_ids, O(n)"),
    "faiss HNSW": Implementation(FaissHNSW, "faiss-cpu", "faiss", False, "no"),
    "hnswlib": Implementation(Hnswlib, "hnswlib", "hnswlib", False, "mark_deleted, reuse"),
    "usearch": Implementation(USearch, "usearch", "usearch", False, "remove"),
    "voyager": Implementation(Voyager, "voyager", "voyager", False, "mark_deleted"),
}
GROUPED = ("semantic.py (numpy)", "hnswlib", "usearch")  # the many-groups cells


@dataclasses.dataclass
class Config:
    sizes: tuple[int, ...] = (1_000, 10_000)
    dims: tuple[int, ...] = (256, 768, 1536)
    queries: int = 1_000
    # (entries, groups, dims) cells: the entries spread evenly over that many groups
    grouped: tuple[tuple[int, int, int], ...] = ((10_000, 1_000, 768),)
    implementations: tuple[str, ...] = tuple(IMPLEMENTATIONS)

    @classmethod
    def quick(cls) -> Config:
        return cls(sizes=(1_000,), dims=(256,), queries=200, grouped=())


# --- one cell, in its own process ---------------------------------------------------------------


def _rss() -> int:
    """Resident bytes, after handing freed heap back (else an index can reuse pages the data's
    temporaries left resident, and seem to take nothing)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _unit_rows(np: Any, rows: Any) -> Any:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def run_cell(name: str, entries: int, dims: int, queries: int, groups: int) -> dict[str, Any]:
    """Add `entries` vectors to `groups` indexes of one implementation, one at a time, then ask
    `queries` top-1 queries, each of the group its vector belongs to."""
    import numpy as np

    implementation = IMPLEMENTATIONS[name]
    importlib.import_module(implementation.module)
    rng = np.random.default_rng(SEED)
    stored = _unit_rows(np, rng.standard_normal((entries, dims)))
    near_count = queries // 2
    sources = rng.integers(0, entries, near_count)
    # Near: the source plus an orthogonal push of the length that gives NEAR_COSINE.
    push = rng.standard_normal((near_count, dims))
    push -= np.sum(push * stored[sources], axis=1, keepdims=True) * stored[sources]
    push = _unit_rows(np, push) * np.sqrt(1.0 / NEAR_COSINE**2 - 1.0)
    near = _unit_rows(np, stored[sources] + push)
    far = _unit_rows(np, rng.standard_normal((queries - near_count, dims)))
    asked = np.concatenate([near, far])
    # Each query asks one group: a near one its source's, a far one a random group.
    asked_groups = np.concatenate(
        [sources % groups, rng.integers(0, groups, queries - near_count)]
    ).tolist()
    per_group = -(-entries // groups)

    before = _rss()
    indexes = [implementation.make(dims, per_group) for _ in range(groups)]
    perf = time.perf_counter
    adds: list[float] = []
    for key in range(entries):
        index = indexes[key % groups]
        began = perf()
        index.add(key, stored[key])
        adds.append(perf() - began)
    memory = _rss() - before

    latencies: list[float] = []
    answers: list[int] = []
    cpu_began = time.process_time()  # every thread's: a BLAS may use more than one core
    for vector, group in zip(asked, asked_groups, strict=True):
        index = indexes[group]
        began = perf()
        key, _ = index.query(vector)
        latencies.append(perf() - began)
        answers.append(key)
    query_cpu = time.process_time() - cpu_began

    # The exact answers, by numpy over each group's rows.
    truth = []
    for vector, group in zip(asked, asked_groups, strict=True):
        rows = np.arange(group, entries, groups)
        truth.append(int(rows[int(np.argmax(stored[rows] @ vector))]))
    near_right = sum(a == t for a, t in zip(answers[:near_count], truth[:near_count], strict=True))
    far_right = sum(a == t for a, t in zip(answers[near_count:], truth[near_count:], strict=True))
    return {
        "implementation": name,
        "entries": entries,
        "groups": groups,
        "dims": dims,
        "add_mean_us": statistics.fmean(adds) * 1e6,
        "add_p50_us": _percentile(adds, 0.50) * 1e6,
        "add_p99_us": _percentile(adds, 0.99) * 1e6,
        "query_p50_us": _percentile(latencies, 0.50) * 1e6,
        "query_p99_us": _percentile(latencies, 0.99) * 1e6,
        "query_cpu_us": query_cpu / len(latencies) * 1e6,
        "recall_near": near_right / max(1, near_count),
        "recall_far": far_right / max(1, queries - near_count),
        "memory_mb": memory / 1e6,
        "matrix_mb": entries * dims * 4 / 1e6,
    }


# --- the whole run -------------------------------------------------------------------------------


def installed(name: str) -> str | None:
    """The version of the implementation's library, or None when it is not installed."""
    implementation = IMPLEMENTATIONS[name]
    try:
        importlib.import_module(implementation.module)
        return importlib.metadata.version(implementation.package)
    except ImportError:
        return None


def _cell_in_process(name: str, entries: int, dims: int, queries: int, groups: int) -> Any:
    spec = json.dumps([name, entries, dims, queries, groups])
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.semantic_index", "--cell", spec],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"the cell {spec} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(config: Config, progress: bool = True) -> dict[str, Any]:
    versions = {name: installed(name) for name in config.implementations}
    cells = [
        (name, entries, dims, 1)
        for entries in config.sizes
        for dims in config.dims
        for name in config.implementations
    ] + [
        (name, entries, dims, groups)
        for entries, groups, dims in config.grouped
        for name in config.implementations
        if name in GROUPED
    ]
    results = []
    for name, entries, dims, groups in cells:
        if versions[name] is None:
            continue
        if progress:
            print(f"  {name}: {entries:,} x {dims}, {groups} group(s)", file=sys.stderr, flush=True)
        results.append(_cell_in_process(name, entries, dims, config.queries, groups))
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "versions": versions,
        "queries": config.queries,
        "cells": results,
    }


def format_table(results: dict[str, Any]) -> str:
    lines = [
        f"Semantic cache index ({results['machine']}; {results['queries']} queries a cell, half "
        f"near copies at cosine {NEAR_COSINE}, half random)",
        "",
        "| index | entries | dims | add p50 µs | add p99 µs | query p50 µs | query p99 µs | "
        "query CPU µs | recall@1 near | recall@1 random | memory MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in results["cells"]:
        entries = f"{cell['entries']:,}"
        if cell["groups"] > 1:
            entries += f" in {cell['groups']:,} groups"
        lines.append(
            f"| {cell['implementation']} | {entries} | {cell['dims']} | {cell['add_p50_us']:.1f} | "
            f"{cell['add_p99_us']:.1f} | {cell['query_p50_us']:.0f} | "
            f"{cell['query_p99_us']:.0f} | {cell['query_cpu_us']:.0f} | "
            f"{cell['recall_near']:.3f} | {cell['recall_far']:.3f} | {cell['memory_mb']:.1f} |"
        )
    lines += ["", "| index | library | exact | forgets an entry |", "|---|---|---|---|"]
    for name, version in results["versions"].items():
        implementation = IMPLEMENTATIONS[name]
        library = "not installed" if version is None else f"{implementation.package} {version}"
        exact = "yes" if implementation.exact else "no (HNSW)"
        lines.append(f"| {name} | {library} | {exact} | {implementation.removes} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.semantic_index", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="1,000 vectors of 256 dimensions")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--only", nargs="+", choices=list(IMPLEMENTATIONS), help="these indexes")
    parser.add_argument(
        "--entries", nargs="+", type=int, metavar="N", help="these sizes only (no grouped cells)"
    )
    parser.add_argument(
        "--dims", nargs="+", type=int, metavar="D", help="these dimensions only (no grouped cells)"
    )
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # one cell, in this process
    args = parser.parse_args(argv)
    if args.cell:
        print(json.dumps(run_cell(*json.loads(args.cell))))
        return 0
    config = Config.quick() if args.quick else Config()
    if args.only:
        config.implementations = tuple(args.only)
    if args.entries or args.dims:
        config.grouped = ()
        config.sizes = tuple(args.entries or config.sizes)
        config.dims = tuple(args.dims or config.dims)
    results = run(config)
    print(format_table(results), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
