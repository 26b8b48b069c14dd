"""CPU thread pools for a shared machine: sized to our cores, sleeping instead of spinning.

Why: on the kiosk a browser shares the CPU with synthesis.  OpenMP (torch's
intra-op pool, MKL) and ONNX Runtime's intra-op pool spin-wait for work by
default; when another process holds one of the two cores, the spinning worker
and the one descheduled behind it make every parallel region wait for a time
slice (measured: `kiosk demo` RTF 1.06 idle, 3.95 with one core busy, 1.79
with the spin-wait off).  So every CPU backend here uses pools that block.

Two settings, two moments:

* `prepare_environment()` sets the OpenMP wait policy.  libgomp reads it once,
  when the library loads, i.e. at `import torch`; the `engines` package calls
  it on import, before any of its modules imports torch.  A value the operator
  already set wins.
* `configure_torch()` / `configure_onnxruntime()` size the pools from the
  cores this process may use (affinity mask, cgroup CPU quota, physical
  cores), not `os.cpu_count()`, and switch ONNX Runtime's spinning off.

`KIOSK_CPU_THREADS` overrides the thread count (benchmarks, tuning).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: OpenMP settings that make idle workers sleep at once instead of spinning:
#: GNU OpenMP (torch's Linux wheels) and Intel OpenMP (MKL builds that use it).
#: Chosen by measurement, see the README ("CPU threads").
WAIT_ENV: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}

#: ONNX Runtime session config keys: workers block instead of spinning.
ORT_NO_SPIN: dict[str, str] = {
    "session.intra_op.allow_spinning": "0",
    "session.inter_op.allow_spinning": "0",
}

THREADS_ENV = "KIOSK_CPU_THREADS"
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_set_after_torch = False


def prepare_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the OpenMP wait policy unless already set; returns what it set.

    Must run before torch loads libgomp (it reads the environment only then).
    """
    global _set_after_torch
    env = os.environ if environ is None else environ
    chosen: dict[str, str] = {}
    for key, value in WAIT_ENV.items():
        if key not in env:
            env[key] = value
            chosen[key] = value
    if chosen and environ is None and "torch" in sys.modules:
        _set_after_torch = True  # libgomp has read the environment already
    return chosen


def _cgroup_quota(root: Path = _CGROUP_ROOT, self_cgroup: Path | None = None) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 `cpu.max`, v1 `cfs_quota_us`), or None."""
    try:
        lines = (self_cgroup or Path("/proc/self/cgroup")).read_text().splitlines()
    except OSError:
        lines = []
    own = [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]
    candidates = [root / p.lstrip("/") for p in own] + [root, root / "cpu", root / "cpu,cpuacct"]
    for folder in candidates:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max":
                return int(quota) / int(period)
            return None
        except (OSError, ValueError):
            pass
        try:
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            period_us = int((folder / "cpu.cfs_period_us").read_text())
            return quota_us / period_us if quota_us > 0 and period_us > 0 else None
        except (OSError, ValueError):
            pass
    return None


def _physical_cores(cpus: set[int], cpuinfo: Path = Path("/proc/cpuinfo")) -> int | None:
    """Distinct physical cores among `cpus` (hyper-threads do not help GEMV-bound graphs)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    cores: set[tuple[str, str]] = set()
    for block in text.split("\n\n"):
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in block.splitlines())
        )
        try:
            if int(fields.get("processor", "-1")) not in cpus:
                continue
        except ValueError:
            continue
        core = fields.get("core id", fields["processor"])
        cores.add((fields.get("physical id", "0"), core))
    return len(cores) or None


@dataclass(frozen=True)
class CpuBudget:
    """How many threads to run, and what decided it (for the log)."""

    threads: int
    reason: str


def cpu_budget(environ: MutableMapping[str, str] | None = None) -> CpuBudget:
    """Threads for this process: `KIOSK_CPU_THREADS`, else min(affinity, quota, cores)."""
    env = os.environ if environ is None else environ
    override = env.get(THREADS_ENV, "").strip()
    if override:
        try:
            if int(override) >= 1:
                return CpuBudget(int(override), f"{THREADS_ENV}={override}")
        except ValueError:
            pass
        log.warning("ignoring %s=%r (not a positive integer)", THREADS_ENV, override)
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    threads, parts = len(cpus), [f"{len(cpus)} CPUs in the affinity mask"]
    physical = _physical_cores(cpus)
    if physical is not None and physical < threads:
        threads = physical
        parts.append(f"{physical} physical cores")
    quota = _cgroup_quota()
    if quota is not None and math.ceil(quota) < threads:
        threads = max(1, math.ceil(quota))
        parts.append(f"cgroup quota {quota:g} CPUs")
    return CpuBudget(max(1, threads), ", ".join(parts))


_logged = False


def _log_once(budget: CpuBudget) -> None:
    global _logged
    if not _logged:
        _logged = True
        policy = ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in WAIT_ENV)
        log.info("CPU threads: %d (%s); %s; ONNX Runtime spinning off",
                 budget.threads, budget.reason, policy)  # fmt: skip


def configure_torch(threads: int | None = None) -> CpuBudget:
    """Size torch's intra-op pool (and log the choice once); warns if spinning stays on."""
    import torch

    budget = CpuBudget(threads, "asked for") if threads else cpu_budget()
    if torch.get_num_threads() != budget.threads:
        torch.set_num_threads(budget.threads)
    if _set_after_torch:
        log.warning("torch was imported before the OpenMP wait policy was set; its threads "
                    "may spin (set %s in the service environment)", WAIT_ENV)  # fmt: skip
    _log_once(budget)
    return budget


def configure_onnxruntime(options: Any, threads: int | None = None) -> Any:
    """`SessionOptions` with `threads` intra-op workers (default: the budget), not spinning."""
    budget = CpuBudget(threads, "asked for") if threads else cpu_budget()
    options.intra_op_num_threads = budget.threads
    options.inter_op_num_threads = 1
    for key, value in ORT_NO_SPIN.items():
        options.add_session_config_entry(key, value)
    _log_once(budget)
    return options
