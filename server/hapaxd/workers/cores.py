"""How many workers `server.workers: auto` means: one per core this process may run on, which is
the smaller of its CPU affinity (taskset, a cpuset) and its cgroup's CPU limit (a container's
`--cpus`, a Kubernetes CPU limit: cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`), rounded up, and at
least 1. Plain Python."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def usable_cores(cgroup: Path = CGROUP) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup)
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


def cgroup_cpu_limit(cgroup: Path = CGROUP) -> float | None:
    """The CPUs the cgroup may use (quota / period), None when unlimited or unknown."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def workers_of(setting: int | str) -> int:
    """The number of worker processes `server.workers` (or --workers) asks for."""
    return usable_cores() if setting == "auto" else int(setting)
