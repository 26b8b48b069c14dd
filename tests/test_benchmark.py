"""The benchmark's plumbing: records, JSON schema, table (timings themselves are not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.benchmark import (
    CONTENDED,
    CONTENTION_TARGET,
    IDLE,
    RECORD_KEYS,
    VOICE_WORKLOAD,
    WORKLOADS,
    Workload,
    available_backends,
    backend_by_name,
    busy_core,
    format_contention,
    format_table,
    measure,
    measure_voice,
    write_json,
)
from engines.backends.base import TorchEagerBackend


def test_standard_workloads() -> None:
    assert WORKLOADS["short"] == Workload(30, 20, 75, 50)
    assert WORKLOADS["long"] == Workload(30, 120, 75, 300)
    assert WORKLOADS["long"].audio_seconds == 12.0


def test_backends_report_why() -> None:
    found = {name: (ok, why) for name, ok, why in available_backends()}
    assert found["torch-eager"][0] is True
    assert set(found) == {"torch-eager", "onnxruntime", "torch-cuda", "tensorrt",
                          "onnxruntime-fp32", "onnxruntime-int8"}  # fmt: skip
    assert found["onnxruntime-int8"][0] == found["onnxruntime"][0]
    assert all(why for _, why in found.values())


def test_a_record_has_every_figure_and_the_json_exactly_the_keys(
    demo_voice, tmp_path: Path
) -> None:
    models, _ = demo_voice
    runtime = TorchEagerBackend().load(models)
    record = measure(runtime, models, "torch-eager", Workload(5, 5, 5, 14), repeats=1)
    record["workload"] = "tiny"
    assert set(record) == set(RECORD_KEYS)
    for key in (
        "prefill_ms",
        "decode_ms_per_token",
        "tokens_per_s",
        "sovits_ms_per_audio_s",
        "rtf",
        "first_audio_ms",
        "total_ms",
    ):
        assert record[key] > 0, key
    write_json(tmp_path / "bench.json", {"cpu_count": 2}, [record])
    data = json.loads((tmp_path / "bench.json").read_text())
    assert list(data) == ["machine", "records"]
    assert list(data["records"][0]) == list(RECORD_KEYS)
    table = format_table([record])
    assert "torch-eager" in table and "1.00x" in table


def test_bench_variants_pin_the_gpt_precision() -> None:
    backend = backend_by_name("onnxruntime-int8")
    assert backend.name == "onnxruntime" and backend.gpt_precision == "int8"
    assert backend_by_name("onnxruntime-fp32").gpt_precision == "fp32"
    assert backend_by_name("onnxruntime").gpt_precision == "auto"
    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        backend_by_name("onnx")


def _record(backend: str, load: str, rtf: float, workload: str = "short") -> dict:
    record = dict.fromkeys(RECORD_KEYS)
    record.update(model="v2", backend=backend, workload=workload, rtf=rtf, cpu_load=load,
                  load_avg=1.5)  # fmt: skip
    return record


def test_contention_table_sets_idle_and_busy_side_by_side() -> None:
    records = [
        _record("torch-eager", IDLE, 1.0),
        _record("torch-eager", CONTENDED, 1.8),
        _record("onnxruntime", IDLE, 0.5),
        _record("onnxruntime", CONTENDED, 1.5),
        _record("tensorrt", IDLE, 0.1),  # no contended run: not in the table
    ]
    table = format_contention(records).splitlines()
    assert str(CONTENTION_TARGET) in table[0]
    eager, ort = (next(line for line in table if name in line) for name in
                  ("torch-eager", "onnxruntime"))  # fmt: skip
    assert "1.80x" in eager and "over target" not in eager
    assert "3.00x" in ort and "over target" in ort
    assert not any("tensorrt" in line for line in table)


def test_busy_core_runs_a_separate_process_only_inside_the_block() -> None:
    import multiprocessing as mp

    before = set(mp.active_children())
    with busy_core():
        spinning = set(mp.active_children()) - before
        assert len(spinning) == 1 and next(iter(spinning)).is_alive()
    assert not (set(mp.active_children()) - before)


def test_bench_arguments_know_contended_and_the_voice_workload() -> None:
    from appliance.cli import build_parser

    args = build_parser().parse_args(["bench", "--contended", "--workloads", "voice"])
    assert args.contended and args.workloads == "voice" and args.voice_dir
    assert VOICE_WORKLOAD == "voice"
    assert "voice" in build_parser().parse_args(["bench"]).workloads.split(",")


def test_voice_workload_goes_through_engines_voice(tmp_path: Path) -> None:
    """One sentence through `Voice` on the demo voice, with its own settings and caps."""
    record = measure_voice("torch-eager", tmp_path / "voice", repeats=1)
    assert set(record) == set(RECORD_KEYS)
    assert record["workload"] == VOICE_WORKLOAD and record["cpu_load"] == IDLE
    assert record["rtf"] > 0 and record["first_audio_ms"] > 0 and record["total_ms"] > 0
    assert "engines.Voice" in format_table([record])
