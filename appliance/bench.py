"""`kiosk bench` / `make bench`: the benchmark table (see `devtools.benchmark`)."""

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
        help="backend(s) to run besides torch-eager (default: every available)",
    )
    parser.add_argument("--models", default="v2,v2ProPlus", help="SoVITS architectures")
    parser.add_argument("--workloads", default="short,long", help="short and/or long")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per backend")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    parser.add_argument(
        "--no-text",
        action="store_true",
        help="skip the text-to-first-audio timing (needs a 1.3 GB BERT)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def run(args: argparse.Namespace) -> int:
    from devtools.benchmark import (
        BENCH_MODELS,
        WORKLOADS,
        available_backends,
        format_table,
        machine_info,
        random_bert_folder,
        run_isolated,
        write_json,
    )

    models = [m for m in args.models.split(",") if m]
    workloads = [w for w in args.workloads.split(",") if w]
    bad = [m for m in models if m not in ("v1", "v2", "v2Pro", "v2ProPlus")]
    bad += [w for w in workloads if w not in WORKLOADS]
    if bad or args.repeats < 1:
        raise ValueError(
            f"unknown model/workload {bad} (models {BENCH_MODELS}, workloads "
            f"{tuple(WORKLOADS)}) or repeats < 1"
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
    records = []
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        bert_dir = None
        if not args.no_text:
            log.info("building a chinese-roberta-sized BERT with random weights for timing")
            bert_dir = str(random_bert_folder(Path(tmp) / "bert"))
        for model in models:
            for backend in chosen:
                log.info("benchmarking %s on %s (%s)", model, backend, ", ".join(workloads))
                try:
                    records += run_isolated(
                        model, backend, workloads, args.repeats, args.threads, bert_dir
                    )
                except RuntimeError as exc:
                    log.error("%s on %s failed: %s", model, backend, exc)
    machine = machine_info()
    print(
        f"machine: {machine['processor']}, {machine['cpu_count']} CPUs, "
        f"GPU: {machine['cuda_device'] or 'none'}, torch {machine['torch']}, "
        f"onnxruntime {machine['onnxruntime']}"
    )
    print(format_table(records))
    if args.json:
        write_json(args.json, machine, records)
        print(f"figures written to {args.json}")
    return 0 if records else 1
