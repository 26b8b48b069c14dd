"""`kiosk bench --boot`: how long `kiosk say` takes from process start to its first audio.

The product target (issue 8): `kiosk say` from a prepared voice folder starts
speaking in under `BOOT_TARGET_S` seconds of process time.  This is measured on
the path a user takes: `kiosk say --stream` run as a real subprocess, its own
`--report-json` figures read back, so interpreter start-up, imports, reading
the voice folder and BERT, loading the runtime and the first chunk all count.

The voice is the demo voice (full-size GPT v2 + SoVITS v2, formula weights),
written once into `--voice-dir` (the folder the `voice` workload of
`kiosk bench` uses) and copied beside it (`<voice-dir>-boot`) as a voice whose
text goes through BERT, as a real voice's does: the demo folder itself skips
BERT, which would leave its load out of the figure.  The BERT is a
chinese-roberta-wwm-ext-large sized model with random weights (what a real box
loads, 1.3 GB), built once into `<voice-dir>-bert`.  The first run of each
backend is an untimed warm-up: it fills the page cache (and, the first time,
exports the ONNX graphs into the voice folder).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.benchmark import (
    _load_avg,
    backend_by_name,
    busy_core,
    machine_info,
    random_bert_folder,
)
from engines.threads import THREADS_ENV
from engines.voice_folder import (
    GPT_FILE,
    PROMPT_FILE,
    SOVITS_FILE,
    VoiceFolderError,
    load_prompt,
    read_config,
    write_voice_folder,
)

log = logging.getLogger(__name__)

#: Issue 8: from process start to the first chunk of audio, `kiosk say` from a voice folder.
BOOT_TARGET_S = 3.0
BOOT_TEXT = "欢迎来到博物馆。"
BOOT_BACKENDS = ("onnxruntime", "torch-eager")
#: Caps the untrained demo voice (it never says EOS); the first chunk comes after 8 tokens.
BOOT_MAX_TOKENS = 60
#: One `kiosk say` run may take this long (the first onnxruntime run exports the graphs).
RUN_TIMEOUT_S = 1800.0
#: What `kiosk say --report-json` writes, and the harness reads back.
REPORT_KEYS = (
    "first_audio_since_start_s",
    "first_audio_cpu_s",
    "first_audio_after_text_s",
    "audio_s",
    "total_s",
    "rtf",
    "backend",
    "precision",
)
#: The two figures the target is about, summarised per backend as min / median / max.
SPREAD_KEYS = ("first_audio_since_start_s", "first_audio_cpu_s")
IDLE, CONTENDED = "idle", "contended"


class BootRunError(RuntimeError):
    """One `kiosk say` run that failed; the message carries the end of its stderr."""


@dataclass(frozen=True)
class BootSetup:
    """What every timed run speaks: the voice folder, the BERT folder and the text."""

    voice_folder: Path
    bert: Path | None
    text: str
    max_tokens: int = BOOT_MAX_TOKENS


def boot_voice_folder(voice_dir: str | Path) -> Path:
    """The demo voice folder in `voice_dir` (written once), and beside it the same voice
    reading its text through BERT (`<voice-dir>-boot`, rewritten only when the demo changes)."""
    from devtools.demo_voice import write_demo_voice_folder

    demo = write_demo_voice_folder(Path(voice_dir))
    config = read_config(demo)
    target = demo.with_name(f"{demo.name}-boot")
    try:
        have = read_config(target)
        if (have.text_features, have.gpt_sha256, have.sovits_sha256) == (
            "bert",
            config.gpt_sha256,
            config.sovits_sha256,
        ):
            return target
    except VoiceFolderError:
        pass
    log.info("writing %s: the demo voice with its text through BERT, as a real voice", target)
    return write_voice_folder(
        target,
        voice_id=f"{config.id}-boot",
        gpt=demo / GPT_FILE,
        sovits=demo / SOVITS_FILE,
        gpt_version=config.gpt_version,
        sovits_version=config.sovits_version,
        prompt=load_prompt(demo / PROMPT_FILE),
        reference_text=config.reference_text,
        reference_language=config.reference_language,
        version=config.version,
        text_features="bert",
        defaults=config.defaults,
        notice=config.notice,
    )


def bench_bert_folder(folder: str | Path) -> Path:
    """A chinese-roberta-wwm-ext-large sized BERT with random weights in `folder`, built once
    (staged beside it and renamed, so an interrupted build is never taken for a finished one)."""
    folder = Path(folder)
    weights = ("model.safetensors", "pytorch_model.bin")
    if (folder / "config.json").is_file() and any((folder / w).is_file() for w in weights):
        return folder
    log.info("building a chinese-roberta-sized BERT with random weights in %s (1.3 GB)", folder)
    stage = folder.with_name(f".{folder.name}.staging-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        random_bert_folder(stage)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(stage, folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return folder


def prepare(
    voice_dir: str | Path,
    *,
    bert: str | Path | None = None,
    voice_folder: str | Path | None = None,
    text: str = BOOT_TEXT,
    max_tokens: int = BOOT_MAX_TOKENS,
) -> BootSetup:
    """The folders the timed runs read, built once: the BERT-reading demo voice beside
    `voice_dir` (or `voice_folder` as given) and, when the voice reads BERT and none is
    given, the full-size random BERT in `<voice-dir>-bert`."""
    folder = Path(voice_folder) if voice_folder else boot_voice_folder(voice_dir)
    if read_config(folder).text_features != "bert":
        log.info("%s reads no BERT: --bert is not used", folder)
        return BootSetup(folder, None, text, max_tokens)
    if bert is None:
        base = Path(voice_dir)
        bert = bench_bert_folder(base.with_name(f"{base.name}-bert"))
    if not Path(bert).is_dir():
        raise ValueError(f"--bert {bert}: no such folder (give a Hugging Face BERT folder)")
    return BootSetup(folder, Path(bert), text, max_tokens)


def kiosk_command() -> list[str]:
    """How a user starts `kiosk`: the entry point beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("kiosk")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "appliance.cli"]


def say_once(
    setup: BootSetup,
    backend: str,
    work: Path,
    *,
    threads: int | None = None,
    timeout: float = RUN_TIMEOUT_S,
) -> dict[str, Any]:
    """One `kiosk say` subprocess; its `--report-json` figures, with the load average before
    it and its wall time as seen from here (spawn to exit)."""
    report = work / "report.json"
    report.unlink(missing_ok=True)
    command = [
        *kiosk_command(),
        "say",
        "--voice-folder",
        str(setup.voice_folder.resolve()),
        *(["--bert", str(setup.bert.resolve())] if setup.bert is not None else []),
        "--text",
        setup.text,
        "--stream",
        "-o",
        str((work / "say.wav").resolve()),
        "--max-tokens",
        str(setup.max_tokens),
        "--backend",
        backend,
        "--report-json",
        str(report.resolve()),
    ]
    env = dict(os.environ)
    if threads:
        env[THREADS_ENV] = str(threads)
    load = _load_avg()
    start = time.perf_counter()
    try:
        # cwd: an empty folder, so no pretrained_models/ of wherever this runs is picked up
        done = subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise BootRunError(f"kiosk say on {backend} ran past {timeout:.0f} s") from exc
    wall = time.perf_counter() - start
    if done.returncode != 0 or not report.is_file():
        # its warnings and errors, not the progress lines a run logs on the way
        lines = [line for line in done.stderr.splitlines() if line and " INFO " not in line]
        tail = "\n".join(lines[-8:])
        raise BootRunError(f"kiosk say on {backend} exited with {done.returncode}:\n{tail}")
    figures = json.loads(report.read_text(encoding="utf-8"))
    missing = [k for k in REPORT_KEYS if k not in figures]
    if missing:
        raise BootRunError(f"kiosk say on {backend}: --report-json lacks {missing}")
    return {
        "requested_backend": backend,
        **{k: figures[k] for k in REPORT_KEYS},
        "process_wall_s": round(wall, 4),
        "load_avg": load,
    }


#: A fresh interpreter importing torch: most of every boot, and a gauge of how fast the
#: machine is at the moment (shared machines drift by half from one minute to the next).
YARDSTICK_CODE = (
    "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
)


def torch_import_s() -> float:
    """Seconds a fresh interpreter takes to import torch (the boot figures' yardstick)."""
    out = subprocess.run(
        [sys.executable, "-c", YARDSTICK_CODE], capture_output=True, text=True, timeout=120
    )
    return float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else float("nan")


def bench_boot(
    setup: BootSetup,
    backends: Sequence[str] = BOOT_BACKENDS,
    repeats: int = 5,
    *,
    contended: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time `repeats` runs of `kiosk say` per backend (after one untimed warm-up each), idle
    and, with `contended`, again with one core held by a busy loop; the figures as a dict."""
    if repeats < 1:
        raise ValueError("--repeats: give at least 1")
    runs: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    load_start = _load_avg()
    loads = (IDLE, CONTENDED) if contended else (IDLE,)
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-boot-") as tmp:
        work = Path(tmp)
        for backend in backends:
            if backend != "auto":
                ok, why = backend_by_name(backend).availability()
                if not ok:
                    log.info("skipping %s: %s", backend, why)
                    errors.append({"backend": backend, "error": f"not available: {why}"})
                    continue
            try:
                log.info("%s: warm-up run (untimed)", backend)
                say_once(setup, backend, work, threads=threads)
                for load in loads:  # idle and contended back to back: same conditions
                    busy = busy_core() if load == CONTENDED else contextlib.nullcontext()
                    with busy:
                        for i in range(repeats):
                            run = say_once(setup, backend, work, threads=threads)
                            run.update(cpu_load=load, repeat=i + 1, torch_import_s=torch_import_s())
                            log.info(
                                "%s (%s) run %d: first audio %.2f s after process start, "
                                "%.2f s CPU",
                                backend,
                                load,
                                i + 1,
                                run["first_audio_since_start_s"],
                                run["first_audio_cpu_s"],
                            )
                            runs.append(run)
            except BootRunError as exc:
                log.error("%s", exc)
                errors.append({"backend": backend, "error": str(exc)})
    return {
        "target_s": BOOT_TARGET_S,
        "voice_folder": str(setup.voice_folder),
        "bert": str(setup.bert) if setup.bert is not None else None,
        "text": setup.text,
        "max_tokens": setup.max_tokens,
        "repeats": repeats,
        "command": [*kiosk_command(), "say"],
        "load_avg_start": load_start,
        "machine": machine_info(),
        "summary": summarize(runs),
        "runs": runs,
        "errors": errors,
    }


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (backend, load): min / median / max of the two boot figures, and the verdict
    (the median time from process start to first audio under `BOOT_TARGET_S`)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["requested_backend"], run["cpu_load"]), []).append(run)
    rows = []
    for (backend, load), group in groups.items():
        row: dict[str, Any] = {
            "backend": backend,
            "cpu_load": load,
            "runtime": group[-1]["backend"],
            "precision": group[-1]["precision"],
            "runs": len(group),
        }
        for key in SPREAD_KEYS:
            values = [r[key] for r in group]
            row[key] = {
                "min": min(values),
                "median": round(statistics.median(values), 4),
                "max": max(values),
            }
        row["first_audio_after_text_s"] = round(
            statistics.median(r["first_audio_after_text_s"] for r in group), 4
        )
        row["rtf"] = round(statistics.median(r["rtf"] for r in group), 4)
        loads = [r["load_avg"] for r in group if r["load_avg"] is not None]
        row["load_avg"] = max(loads) if loads else None
        yardsticks = [r["torch_import_s"] for r in group if r.get("torch_import_s", -1) >= 0]
        row["torch_import_s"] = round(statistics.median(yardsticks), 3) if yardsticks else None
        row["passed"] = row["first_audio_since_start_s"]["median"] < BOOT_TARGET_S
        rows.append(row)
    return rows


def format_result(result: dict[str, Any]) -> str:
    """The report a technician reads: one line per backend and load, with the verdict."""
    machine = result["machine"]
    lines = [
        "kiosk say --stream from a prepared voice folder: process start -> first audio chunk",
        f"voice folder {result['voice_folder']}, BERT {result['bert'] or '(not used)'}, "
        f"text {result['text']} (--max-tokens {result['max_tokens']}), "
        f"timed runs per backend: {result['repeats']}, after one warm-up",
        f"machine: {machine['processor']}, {machine['cpu_count']} CPUs "
        f"({machine['cpu_threads']} usable), "
        f"load average at start {_fmt(result['load_avg_start'])}",
        "",
    ]
    head = (
        f"{'backend':12} {'load':9} {'precision':9} {'since start s (min/med/max)':>27} "
        f"{'CPU s (min/med/max)':>21} {'after text':>10} {'RTF':>6} {'loadavg':>7} "
        f"{'torch import':>12}  target < {result['target_s']:g} s"
    )
    if result["summary"]:
        lines += [head, "-" * len(head)]
    for row in result["summary"]:
        since, cpu = row["first_audio_since_start_s"], row["first_audio_cpu_s"]
        verdict = "pass" if row["passed"] else "FAIL"
        lines.append(
            f"{row['backend']:12} {row['cpu_load']:9} {row['precision']:9} "
            f"{_spread(since):>27} {_spread(cpu):>21} "
            f"{row['first_audio_after_text_s']:>9.2f}s {row['rtf']:>6.2f} "
            f"{_fmt(row['load_avg']):>7} {_fmt(row.get('torch_import_s')):>11}s  "
            f"{verdict} (median)"
        )
    for error in result["errors"]:
        lines.append(f"{error['backend']}: not measured: {error['error']}")
    if result["summary"]:
        lines.append(
            "torch import: a fresh interpreter importing torch after each run (median), the "
            "machine's speed at the time"
        )
    return "\n".join(lines)


def write_json(path: str | Path, result: dict[str, Any]) -> None:
    """The `--json` file: setup, machine, per-backend summary and every run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _spread(values: dict[str, float]) -> str:
    return f"{values['min']:.2f} / {values['median']:.2f} / {values['max']:.2f}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
