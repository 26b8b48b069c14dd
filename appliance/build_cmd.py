"""`kiosk build ID` / `kiosk build --all` and `kiosk provenance FILE`.

`kiosk build` does for an installed, active voice what provisioning does in
staging: the engines for this device (ONNX export and the 8-bit GPT check on
the voice's own prompt and phrases, TensorRT where present), then every
phrase and archival recording cached, levelled and marked.  It is idempotent
(an unchanged voice and phrase are not rebuilt) and resumable (a killed run
leaves whole files and an index that lists only them); it holds the state
lock, so it never races `kiosk provision`.  `make engines` runs `--all`.

`kiosk provenance FILE` reads a file's C2PA mark back; on the box it trusts
the box's own CA, so its files read "Trusted".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from appliance.box import add_state_arguments, box_state

BACKENDS = ("auto", "torch-eager", "onnxruntime", "torch-cuda", "tensorrt")


class BuildUsageError(ValueError):
    """Arguments that name no voice, or a voice that is not installed."""


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", nargs="?", help="the voice's id (see kiosk voices)")
    parser.add_argument("--all", action="store_true", help="every installed active voice")
    add_state_arguments(parser)
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="runtime to build engines for and speak with (auto: the fastest here)",
    )
    parser.add_argument(
        "--target-lufs",
        type=float,
        default=None,
        help="loudness of the cached files (default -18 LUFS)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="cap on semantic tokens per segment (default: the voice's own caps)",
    )


def run_build(args: argparse.Namespace) -> int:
    from kiosk_build.precache import DEFAULT_TARGET_LUFS

    from appliance.say import export_on_demand
    from provisioning.precache_jobs import BuildSettings, build_version
    from provisioning.provision import box_helpers, notify_daemon

    if bool(args.id) == bool(args.all):
        raise BuildUsageError("give a voice ID or --all (one of them)")
    if args.target_lufs is not None and not -40.0 <= args.target_lufs <= -6.0:
        raise BuildUsageError(
            f"--target-lufs {args.target_lufs:g}: choose a loudness from -40 to -6 LUFS "
            "(speech in a gallery: -18 to -23)"
        )
    if args.max_tokens is not None and args.max_tokens < 1:
        raise BuildUsageError("--max-tokens: at least 1 (or leave it out: the voice's own caps)")
    state = box_state(args)
    settings = BuildSettings(
        backend=args.backend,
        target_lufs=DEFAULT_TARGET_LUFS if args.target_lufs is None else args.target_lufs,
        max_new_tokens=args.max_tokens,
    )
    with state.locked():
        ids = state.ids("voice") if args.all else [args.id]
        targets = []
        for voice_id in ids:
            active = state.active(voice_id)
            if active is None or active.manifest.voice is None:
                if args.all:
                    continue
                raise BuildUsageError(
                    f"no installed voice {voice_id!r} in {state.root}; see `kiosk voices`, or "
                    "install it with `kiosk provision SOURCE`"
                )
            targets.append(active)
        if not targets:
            print(f"no voices installed in {state.root} (kiosk provision SOURCE)")
            return 0
        changed = False
        helpers = box_helpers(state)
        for active in targets:
            line, made = build_version(
                state.root,
                active.folder,
                active.manifest,
                active.manifest_sha256,
                settings=settings,
                helpers=helpers,
                export=export_on_demand,
            )
            changed = changed or made
            print(f"{active.manifest.id} v{active.version}: {line}", flush=True)
        if changed:
            notify_daemon(state)
    return 0


def add_provenance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a cached phrase (.flac) or any FLAC/WAV")
    parser.add_argument("--json", action="store_true", help="the whole record as JSON")
    parser.add_argument(
        "--state",
        metavar="DIR",
        help="state folder whose box CA to trust (default $KIOSK_STATE_DIR, /var/lib/kiosk)",
    )


def run_provenance(args: argparse.Namespace) -> int:
    """Exit 0 for a sound mark, 1 for a damaged one; no mark at all is an error (2)."""
    from kiosk_build.provenance import box_trust_anchors, describe, is_sound, read_provenance

    from provisioning.state import PROVENANCE_DIR

    anchors = box_trust_anchors(box_state(args).root / PROVENANCE_DIR)
    record = read_provenance(Path(args.file), anchors)
    if args.json:
        print(json.dumps(record, ensure_ascii=False, indent=2))
    else:
        print(describe(record))
    return 0 if is_sound(record) else 1


#: (command, help, add arguments, run)
COMMANDS = (
    ("build", "build engines and cache the phrases of installed voices (ID or --all)",
     add_build_arguments, run_build),
    ("provenance", "read a cached file's provenance mark (C2PA) back",
     add_provenance_arguments, run_provenance),
)  # fmt: skip
