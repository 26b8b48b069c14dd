"""CPU thread settings: wait policy before torch loads, thread count from usable cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engines import threads
from engines.threads import (
    ORT_NO_SPIN,
    THREADS_ENV,
    WAIT_ENV,
    _cgroup_quota,
    _physical_cores,
    configure_onnxruntime,
    cpu_budget,
    prepare_environment,
)

REPO = Path(__file__).resolve().parents[1]


def test_wait_policy_is_passive_unless_the_operator_chose() -> None:
    env: dict[str, str] = {}
    assert prepare_environment(env) == WAIT_ENV
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["KMP_BLOCKTIME"] == "0"
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert prepare_environment(mine) == {"KMP_BLOCKTIME": "0"}
    assert mine["OMP_WAIT_POLICY"] == "ACTIVE"


def test_importing_engines_first_stops_openmp_spinning() -> None:
    """libgomp reads the policy when torch loads it: `import engines` must come first."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_ENV and k != "GOMP_SPINCOUNT"}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    out = subprocess.run(
        [sys.executable, "-c", "import engines, torch; torch.ones(2).sum()"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    if "GOMP_SPINCOUNT" not in out.stderr:
        pytest.skip("torch here does not use GNU OpenMP")
    assert "GOMP_SPINCOUNT = '0'" in out.stderr


def test_thread_count_follows_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    budget = cpu_budget({})
    assert budget.threads == 1 and "affinity" in budget.reason


def test_thread_count_follows_the_cgroup_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(threads, "_physical_cores", lambda cpus: None)
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)
    assert cpu_budget({}).threads == 2
    assert cpu_budget({THREADS_ENV: "3"}).threads == 3  # explicit override
    assert cpu_budget({THREADS_ENV: "zero"}).threads == 2  # ignored with a warning


def test_cgroup_files_v2_and_v1(tmp_path: Path) -> None:
    own = tmp_path / "self-cgroup"
    own.write_text("0::/kiosk.service\n")
    (tmp_path / "kiosk.service").mkdir()
    (tmp_path / "kiosk.service" / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_quota(tmp_path, own) == 1.5
    (tmp_path / "kiosk.service" / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(tmp_path, own) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_quota(v1, tmp_path / "missing") == 1.0


def test_hyper_threads_count_once(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    blocks = [f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i % 2}\n" for i in range(4)]
    info.write_text("\n".join(blocks))
    assert _physical_cores({0, 1, 2, 3}, info) == 2
    assert _physical_cores({0}, info) == 1
    assert _physical_cores({0}, tmp_path / "none") is None


def test_onnxruntime_workers_do_not_spin() -> None:
    ort = pytest.importorskip("onnxruntime")
    options = configure_onnxruntime(ort.SessionOptions(), 1)
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    for key, value in ORT_NO_SPIN.items():
        assert options.get_session_config_entry(key) == value
    options = configure_onnxruntime(ort.SessionOptions())
    assert options.intra_op_num_threads == cpu_budget().threads
