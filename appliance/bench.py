"""`kiosk bench` / `make bench`: the benchmark table (see `devtools.benchmark`); with
`--daemon` the daemon's press latency (`devtools.daemon_bench`), with `--boot` the time
`kiosk say` takes from process start to first audio (`devtools.boot_bench`)."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        action="append",
        metavar="NAME",
        help="backend(s) to run besides torch-eager (default: every available); with "
        "--boot, the backends to time (default: onnxruntime and torch-eager)",
    )
    parser.add_argument("--models", default="v2,v2ProPlus", help="SoVITS architectures")
    parser.add_argument(
        "--workloads",
        default="short,long,voice",
        help="short, long (fixed token counts) and/or voice (a sentence through engines.Voice)",
    )
    parser.add_argument(
        "--voice-dir",
        default="out/bench-voice",
        metavar="DIR",
        help="demo voice folder for the voice workload and --boot (written once, graphs "
        "exported into it)",
    )
    parser.add_argument(
        "--contended",
        action="store_true",
        help="also measure every backend with one core held by a busy-loop process, "
        "side by side with the idle figures (ratio per backend)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per backend")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed repeats (median; default 3, 5 with --boot)"
    )
    parser.add_argument(
        "--no-text",
        action="store_true",
        help="skip the text-to-first-audio timing (needs a 1.3 GB BERT)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    daemon = parser.add_argument_group("the daemon (instead of the backend table)")
    daemon.add_argument(
        "--daemon",
        action="store_true",
        help="press -> first sample of `kiosk run` (p50/p99 over --presses presses of a "
        "cached phrase while free text is synthesised), on the tiny sample box",
    )
    daemon.add_argument("--presses", type=int, default=1000, help="presses for --daemon")
    daemon.add_argument(
        "--box", metavar="DIR", help="sample box folder for --daemon (built there if empty)"
    )
    boot = parser.add_argument_group("boot time (instead of the backend table)")
    boot.add_argument(
        "--boot",
        action="store_true",
        help="process start -> first audio of `kiosk say --stream` from a prepared voice folder, "
        "run as a subprocess --repeats times per backend after one warm-up (target < 3 s)",
    )
    boot.add_argument(
        "--boot-text", metavar="TEXT", help="what --boot says (default 欢迎来到博物馆。)"
    )
    boot.add_argument(
        "--bert",
        metavar="DIR",
        help="BERT folder for --boot (default: a full-size one with random weights, built once "
        "beside --voice-dir)",
    )
    boot.add_argument(
        "--boot-voice", metavar="DIR", help="time this prepared voice folder, not the demo voice"
    )


def run(args: argparse.Namespace) -> int:
    if args.daemon:
        return run_daemon_bench(args)
    if args.boot:
        return run_boot_bench(args)
    from devtools.benchmark import (
        BENCH_MODELS,
        VOICE_WORKLOAD,
        WORKLOADS,
        available_backends,
        format_contention,
        format_table,
        machine_info,
        random_bert_folder,
        run_isolated,
        write_json,
    )

    args.repeats = 3 if args.repeats is None else args.repeats
    models = [m for m in args.models.split(",") if m]
    workloads = [w for w in args.workloads.split(",") if w]
    bad = [m for m in models if m not in ("v1", "v2", "v2Pro", "v2ProPlus")]
    bad += [w for w in workloads if w not in WORKLOADS and w != VOICE_WORKLOAD]
    if bad or args.repeats < 1:
        raise ValueError(
            f"unknown model/workload {bad} (models {BENCH_MODELS}, workloads "
            f"{(*WORKLOADS, VOICE_WORKLOAD)}) or repeats < 1"
        )
    chosen = ["torch-eager"]
    for name, ok, why in available_backends():
        if name == "torch-eager":
            continue
        wanted = args.backend is None or name in args.backend
        if wanted and ok:
            chosen.append(name)
        elif wanted:
            log.info("skipping %s: %s", name, why)
    fixed = [w for w in workloads if w in WORKLOADS]
    loads = (False, True) if args.contended else (False,)
    records = []
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        bert_dir = None
        if not args.no_text and fixed:
            log.info("building a chinese-roberta-sized BERT with random weights for timing")
            bert_dir = str(random_bert_folder(Path(tmp) / "bert"))
        # (model, workloads, bert): the formula-weight models, then the Voice workload once.
        jobs = [(model, fixed, bert_dir) for model in models if fixed]
        if VOICE_WORKLOAD in workloads:
            jobs.append(("demo", [VOICE_WORKLOAD], None))
        for model, job_workloads, job_bert in jobs:
            for backend in chosen:
                for contended in loads:  # idle and contended back to back: same conditions
                    busy = ", one core busy" if contended else ""
                    log.info("benchmarking %s on %s (%s)%s", model, backend,
                             ", ".join(job_workloads), busy)  # fmt: skip
                    try:
                        records += run_isolated(
                            model, backend, job_workloads, args.repeats, args.threads,
                            job_bert, args.voice_dir, contended=contended,
                        )  # fmt: skip
                    except RuntimeError as exc:
                        log.error("%s on %s failed: %s", model, backend, exc)
    machine = machine_info()
    print(
        f"machine: {machine['processor']}, {machine['cpu_count']} CPUs "
        f"({machine['cpu_threads']} usable, load average {machine['load_avg']}), "
        f"GPU: {machine['cuda_device'] or 'none'}, torch {machine['torch']}, "
        f"onnxruntime {machine['onnxruntime']}"
    )
    print(format_table(records))
    if args.contended:
        print()
        print(format_contention(records))
    if args.json:
        write_json(args.json, machine, records)
        print(f"figures written to {args.json}")
    return 0 if records else 1


def run_daemon_bench(args: argparse.Namespace) -> int:
    from devtools.daemon_bench import bench_daemon, format_result, write_json

    if args.presses < 10:
        raise ValueError("--presses: give at least 10")
    result = bench_daemon(args.presses, box_dir=args.box)
    print(format_result(result))
    if args.json:
        write_json(args.json, result)
        print(f"figures written to {args.json}")
    return 0 if result["exit_code"] == 0 and result["measured"] else 1


def run_boot_bench(args: argparse.Namespace) -> int:
    from appliance.say import BACKENDS
    from devtools.boot_bench import BOOT_BACKENDS, BOOT_TEXT, bench_boot, format_result, prepare
    from devtools.boot_bench import write_json as write_boot_json

    backends = args.backend or list(BOOT_BACKENDS)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"--backend {unknown}: with --boot choose from {', '.join(BACKENDS)}")
    setup = prepare(
        args.voice_dir,
        bert=args.bert,
        voice_folder=args.boot_voice,
        text=args.boot_text or BOOT_TEXT,
    )
    repeats = 5 if args.repeats is None else args.repeats
    result = bench_boot(setup, backends, repeats, contended=args.contended, threads=args.threads)
    print(format_result(result))
    if args.json:
        write_boot_json(args.json, result)
        print(f"figures written to {args.json}")
    return 0 if result["runs"] and not result["errors"] else 1
