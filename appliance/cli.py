"""The `kiosk` command: one entry point, one subcommand per job.

Errors a technician can fix (a wrong file, a missing folder) are printed as
one clear line and exit with status 2; they never end in a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from engines.backends import ort_sessions
from engines.backends.errors import BackendUnavailableError
from engines.gc_tables import permanent
from engines.threads import configure_torch
from engines.voice_layout import GRAPHS_DIR

log = logging.getLogger("kiosk")


def _compat_check(args: argparse.Namespace) -> int:
    from devtools.compat.check import KINDS, compat_check

    kinds = args.only.split(",") if args.only else list(KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise UsageError(f"--only: unknown kind(s) {unknown}; choose from {', '.join(KINDS)}")
    return 0 if compat_check(Path(args.folder), kinds) else 1


def _inspect(args: argparse.Namespace) -> int:
    from engines.checkpoint_reader import (
        checkpoint_kind,
        load_gpt_checkpoint,
        load_sovits_checkpoint,
        read_container,
    )

    for name in args.files:
        obj, _ = read_container(name)
        kind = checkpoint_kind(obj["weight"])
        if kind is None:
            raise UsageError(f"{name}: neither a GPT nor a SoVITS model of GPT-SoVITS")
        loader = load_gpt_checkpoint if kind == "gpt" else load_sovits_checkpoint
        ckpt = loader(name)
        params = sum(t.numel() for t in ckpt.state_dict.values())
        print(
            f"{name}: {kind.upper()} {ckpt.version}, {len(ckpt.state_dict)} tensors, "
            f"{params / 1e6:.2f} M values, info {ckpt.info or '(none)'}"
        )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from appliance.demo import run_demo

    paths = run_demo(Path(args.out), seed=args.seed, backend=args.backend)
    print("\n".join(str(p) for p in paths))
    return 0


def _open_graphs_early(argv: Sequence[str]) -> bool:
    """Start opening a voice folder's ONNX graphs before torch loads (a second of boot).

    Only for `kiosk say --voice-folder` on ONNX Runtime (forced, or "auto" on a
    box without a GPU, where auto picks it).  It runs before the full parser is
    built, because building it imports the engine and so torch; the backend
    later takes the sessions over, or opens its own if the folder is stale.
    """
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("-v", "--verbose", action="store_true")
    early.add_argument("command", nargs="?")
    early.add_argument("--voice-folder")
    early.add_argument("--backend", default="auto")
    try:
        known, _ = early.parse_known_args(argv)
    except SystemExit:  # odd arguments: the real parser reports them
        return False
    if known.command != "say" or not known.voice_folder:
        return False
    if known.backend not in ("auto", "onnxruntime"):
        return False
    if known.backend == "auto" and ort_sessions.gpu_present():
        return False
    try:
        return ort_sessions.open_early(Path(known.voice_folder) / GRAPHS_DIR) > 0
    except Exception:  # only a head start: the real load reports any problem
        log.debug("graphs not opened early", exc_info=True)
        return False


def _say(args: argparse.Namespace) -> int:
    from appliance.say import run

    written = run(args)
    if written is not None:
        print(written)
    return 0


def _prepare_voice(args: argparse.Namespace) -> int:
    from appliance.say import run_prepare

    print(run_prepare(args))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from appliance.bench import run

    return run(args)


def _delegated(command: str, rest: Sequence[str]) -> int:
    """Commands whose own argument parser lives with the build step."""
    if command == "export-onnx":
        from kiosk_build.export_onnx import main as export_main

        return export_main(list(rest))
    from kiosk_build.tensorrt_build import main as build_main

    return build_main(list(rest))


DELEGATED = ("export-onnx", "build-engines")


class UsageError(Exception):
    """A mistake in what the user asked for; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk", description="Heritage Voice Kiosk: voices of elders, cloned with GPT-SoVITS."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = sub.add_parser(
        "compat-check",
        help="check the engine against a folder of reference golden data",
        description="Rebuild the formula-weight models of a golden folder, run every case and "
        "print one line per case; exit 0 only when every case matches.",
    )
    check.add_argument("folder", metavar="DIR", help="golden folder (e.g. tests/golden)")
    check.add_argument(
        "--only", metavar="KINDS", help="comma-separated kinds to run: weights,gpt,sovits,text"
    )
    check.set_defaults(func=_compat_check)

    inspect = sub.add_parser("inspect", help="tell what a GPT .ckpt / SoVITS .pth file is")
    inspect.add_argument("files", nargs="+", metavar="FILE")
    inspect.set_defaults(func=_inspect)

    say = sub.add_parser(
        "say",
        help="speak text with a voice into a WAV or the speaker",
        description="Load a voice (a prepared voice folder, or official GPT .ckpt + SoVITS "
        ".pth with a reference clip) and speak the text into a 32 kHz mono WAV (-o) or the "
        "sound card (--play); --stream delivers audio as it is made.",
    )
    from appliance.say import add_arguments, add_prepare_arguments

    add_arguments(say)
    say.set_defaults(func=_say)

    prepare = sub.add_parser(
        "prepare-voice",
        help="turn official files + a reference clip into a voice folder",
        description="Compute the voice's prompt once (HuBERT prompt tokens, reference phones "
        "and BERT, speaker embedding, timbre) and write a voice folder that boots without "
        "HuBERT or the speaker model.",
    )
    add_prepare_arguments(prepare)
    prepare.set_defaults(func=_prepare_voice)

    # Workstation: keys, voice packs, signatures, revocation lists (see provisioning/).
    from appliance.packs import COMMANDS as PACK_COMMANDS

    for name, summary, add_pack_args, run_pack_command in PACK_COMMANDS:
        pack_parser = sub.add_parser(name, help=summary, description=summary)
        add_pack_args(pack_parser)
        pack_parser.set_defaults(func=run_pack_command)

    # The box: provisioning from a stick, installed voices (see provisioning/provision.py).
    from appliance.box import COMMANDS as BOX_COMMANDS

    for name, summary, add_box_args, run_box_command in BOX_COMMANDS:
        box_parser = sub.add_parser(name, help=summary, description=summary)
        add_box_args(box_parser)
        box_parser.set_defaults(func=run_box_command)

    # The build step on the box: engines and cached phrases (see appliance/build_cmd.py).
    from appliance.build_cmd import COMMANDS as BUILD_COMMANDS

    for name, summary, add_build_args, run_build_command in BUILD_COMMANDS:
        build_parser_ = sub.add_parser(name, help=summary, description=summary)
        add_build_args(build_parser_)
        build_parser_.set_defaults(func=run_build_command)

    from appliance import config_cmd

    config_parser = sub.add_parser(
        "config", help=config_cmd.SUMMARY, description=config_cmd.SUMMARY
    )
    config_cmd.add_arguments(config_parser)

    from appliance import stats_cmd

    stats_parser = sub.add_parser("stats", help=stats_cmd.SUMMARY, description=stats_cmd.SUMMARY)
    stats_cmd.add_arguments(stats_parser)

    from appliance import run_cmd

    run_parser = sub.add_parser("run", help="the daemon (as kioskd)", description=run_cmd.__doc__)
    run_cmd.add_arguments(run_parser)
    run_parser.set_defaults(func=run_cmd.run)

    bench = sub.add_parser(
        "bench",
        help="time every available backend against torch eager",
        description="Full-size GPT v2 + SoVITS v2/v2ProPlus with formula weights, fixed "
        "workloads, each backend in its own process; prints a table of medians and speed-ups.",
    )
    from appliance.bench import add_arguments as add_bench_arguments

    add_bench_arguments(bench)
    bench.set_defaults(func=_bench)

    export = sub.add_parser(
        "export-onnx",
        add_help=False,
        help="export a voice's GPT and SoVITS to ONNX graphs (see: kiosk export-onnx --help)",
    )
    export.set_defaults(func=None)
    engines = sub.add_parser(
        "build-engines",
        add_help=False,
        help="build TensorRT engines from an ONNX export (see: kiosk build-engines --help)",
    )
    engines.set_defaults(func=None)

    demo = sub.add_parser("demo", help="synthesise a few sentences with the demo voice")
    demo.add_argument("--out", default="out/demo", help="folder for the voice and WAV files")
    demo.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same audio)")
    demo.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch-eager", "onnxruntime", "torch-cuda", "tensorrt"),
        help="runtime for the voice (auto: the fastest that works here)",
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        configure_torch()
        return _delegated(argv[0], argv[1:])
    early = _open_graphs_early(argv)
    try:
        return _run(argv)
    finally:
        if early:  # sessions nobody took: cancel those not begun (see `open_early`)
            ort_sessions.drop_early()


def _run(argv: Sequence[str]) -> int:
    with permanent():  # the engine's modules and tables live as long as the process
        parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Threads from the cores we may use; the OpenMP wait policy was set when this
    # module imported `engines` (before torch), see `engines.threads`.
    configure_torch()
    try:
        return int(args.func(args))
    except (UsageError, ValueError, OSError, BackendUnavailableError) as exc:
        # Every "bad input" error of the project is a ValueError subclass that says
        # what to fix (bad files, text, options); -v shows where it came from.
        log.debug("details", exc_info=True)
        print(f"kiosk {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
