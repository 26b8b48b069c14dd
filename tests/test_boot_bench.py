"""`kiosk say --report-json` and `kiosk bench --boot`, end to end on the tiny sample voice.

The voice folder is the tests' tiny sample voice (2-layer GPT v2, SoVITS v2, formula
weights) through `kiosk prepare-voice`, with the tiny BERT; the harness runs the real
`kiosk say` subprocesses.  Timings themselves are not asserted (the 3 s target is
checked by the benchmark), only that the figures exist, are positive and ordered.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest

from appliance.cli import main
from devtools.boot_bench import BOOT_TARGET_S, REPORT_KEYS, SPREAD_KEYS, format_result, summarize
from devtools.sample_packs import REF_TEXT, write_kit


@pytest.fixture(scope="module")
def tiny_voice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(voice folder, BERT folder) of the tiny sample voice."""
    root = tmp_path_factory.mktemp("boot")
    kit = write_kit(root / "kit")
    folder = root / "voice"
    prepare = [
        "prepare-voice",
        "--gpt", str(kit.gpt), "--sovits", str(kit.sovits), "--ref", str(kit.ref),
        "--ref-text", REF_TEXT, "--pretrained", str(kit.pretrained),
        "--id", "tiny", "--out", str(folder),
    ]  # fmt: skip
    assert main(prepare) == 0
    return folder, kit.pretrained / "chinese-roberta-wwm-ext-large"


@pytest.mark.parametrize("stream", [True, False])
def test_say_report_json_has_the_logged_figures(tiny_voice, tmp_path, stream: bool) -> None:
    folder, bert = tiny_voice
    out, report = tmp_path / "say.wav", tmp_path / "report.json"
    say = ["say", "--voice-folder", str(folder), "--bert", str(bert), "--text", REF_TEXT,
           "-o", str(out), "--backend", "torch-eager", "--max-tokens", "20",
           "--report-json", str(report)]  # fmt: skip
    assert main([*say, "--stream"] if stream else say) == 0
    figures = json.loads(report.read_text())
    assert set(REPORT_KEYS) <= set(figures)
    assert (figures["backend"], figures["precision"], figures["stream"]) == (
        "torch-eager",
        "fp32",
        stream,
    )
    with wave.open(str(out)) as wav:
        assert figures["audio_s"] == pytest.approx(wav.getnframes() / 32000, abs=1e-3)
    assert 0 < figures["first_audio_after_text_s"] <= figures["total_s"]
    # In this process the age includes pytest's own start-up: later than the text's start.
    assert figures["first_audio_since_start_s"] > figures["first_audio_after_text_s"]
    assert figures["first_audio_cpu_s"] > 0
    assert figures["rtf"] == pytest.approx(figures["total_s"] / figures["audio_s"], rel=1e-2)
    assert not list(tmp_path.glob(".tmp-*"))  # written then renamed


def test_bench_boot_end_to_end(tiny_voice, tmp_path, capsys) -> None:
    folder, bert = tiny_voice
    unused = tmp_path / "bench-voice"
    result_file = tmp_path / "boot.json"
    args = ["bench", "--boot", "--boot-voice", str(folder), "--bert", str(bert),
            "--voice-dir", str(unused), "--backend", "torch-eager", "--repeats", "1",
            "--json", str(result_file)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads(result_file.read_text())
    assert not unused.exists() and not unused.with_name("bench-voice-bert").exists()
    assert result["errors"] == [] and result["repeats"] == 1
    assert (result["voice_folder"], result["bert"]) == (str(folder), str(bert))
    assert result["command"][-1] == "say" and result["target_s"] == BOOT_TARGET_S
    (run,) = result["runs"]  # the warm-up is not among them
    assert (run["requested_backend"], run["backend"], run["cpu_load"]) == (
        "torch-eager",
        "torch-eager",
        "idle",
    )
    # A fresh process: the first audio comes after the text's start, within the process's life.
    assert 0 < run["first_audio_after_text_s"] < run["first_audio_since_start_s"]
    assert run["first_audio_since_start_s"] < run["process_wall_s"]
    assert run["first_audio_cpu_s"] > 0 and run["audio_s"] > 0
    (row,) = result["summary"]
    for key in SPREAD_KEYS:
        assert row[key]["min"] == row[key]["median"] == row[key]["max"] == run[key]
    assert row["passed"] == (run["first_audio_since_start_s"] < BOOT_TARGET_S)
    assert "torch-eager" in printed and "target < 3 s" in printed


def test_bench_boot_fails_without_a_voice_that_speaks(tiny_voice, tmp_path, capsys) -> None:
    """A backend whose `kiosk say` fails is reported with its error and a non-zero exit."""
    folder, _ = tiny_voice
    missing_bert = tmp_path / "no-bert"
    missing_bert.mkdir()  # exists, but holds no model: kiosk say must fail and say why
    args = ["bench", "--boot", "--boot-voice", str(folder), "--bert", str(missing_bert),
            "--backend", "torch-eager", "--repeats", "1"]  # fmt: skip
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "torch-eager: not measured: kiosk say on torch-eager exited with 2" in printed


def _run(backend: str, load: str, since: float, cpu: float) -> dict:
    return {
        "requested_backend": backend,
        "backend": backend,
        "precision": "fp32",
        "cpu_load": load,
        "first_audio_since_start_s": since,
        "first_audio_cpu_s": cpu,
        "first_audio_after_text_s": 0.5,
        "rtf": 0.8,
        "load_avg": 1.0,
    }


def test_the_verdict_is_on_the_median_per_backend_and_load() -> None:
    runs = [_run("onnxruntime", "idle", s, s * 0.9) for s in (2.0, 2.5, 3.4)]
    runs += [_run("onnxruntime", "contended", s, s) for s in (2.9, 3.1, 3.2)]
    rows = {(r["backend"], r["cpu_load"]): r for r in summarize(runs)}
    idle, busy = rows["onnxruntime", "idle"], rows["onnxruntime", "contended"]
    assert idle["first_audio_since_start_s"] == {"min": 2.0, "median": 2.5, "max": 3.4}
    assert idle["first_audio_cpu_s"]["median"] == pytest.approx(2.25)
    assert idle["passed"] and not busy["passed"] and busy["runs"] == 3
    result = {
        "machine": {"processor": "cpu", "cpu_count": 2, "cpu_threads": 2},
        "voice_folder": "v",
        "bert": "b",
        "text": "欢迎。",
        "max_tokens": 60,
        "repeats": 3,
        "load_avg_start": 0.5,
        "target_s": BOOT_TARGET_S,
        "summary": list(rows.values()),
        "errors": [],
    }
    lines = format_result(result).splitlines()
    assert any("idle" in line and "2.00 / 2.50 / 3.40" in line and "pass" in line for line in lines)
    assert any("contended" in line and "FAIL" in line for line in lines)
