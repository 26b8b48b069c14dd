"""The benchmark's plumbing: records, JSON schema, table (timings themselves are not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.benchmark import (
    RECORD_KEYS,
    WORKLOADS,
    Workload,
    available_backends,
    backend_by_name,
    format_table,
    measure,
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
