"""The box's voice commands: `kiosk provision`, `voices`, `rollback`, `remove`.

Argument parsing and printing only; the work is in `provisioning/` (the
state-folder layout in `provisioning.state`).  Every command takes `--state`
and `--config-dir` the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from provisioning.state import State, config_dir, state_dir


def add_state_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        metavar="DIR",
        help="state folder (default $KIOSK_STATE_DIR, $STATE_DIRECTORY, /var/lib/kiosk)",
    )
    parser.add_argument(
        "--config-dir",
        metavar="DIR",
        help="config folder holding trusted-keys/ (default $KIOSK_CONFIG_DIR, /etc/kiosk)",
    )


def box_state(args: argparse.Namespace) -> State:
    return State(state_dir(getattr(args, "state", None)))


def add_provision_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="folder of packs and revocation lists")
    add_state_arguments(parser)
    parser.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="install an older version, or the same version with other content",
    )
    parser.add_argument(
        "--backend",
        default="torch-eager",
        choices=("auto", "torch-eager", "onnxruntime", "torch-cuda", "tensorrt"),
        help="runtime the health check loads the voice on (default torch-eager)",
    )


def run_provision(args: argparse.Namespace) -> int:
    from appliance.say import export_on_demand
    from provisioning.provision import Provisioner, box_trust, write_reports

    state = box_state(args)
    trust = box_trust(config_dir(args.config_dir))
    provisioner = Provisioner(
        state,
        trust,
        allow_downgrade=args.allow_downgrade,
        backend=args.backend,
        export=export_on_demand,
        progress=lambda line: print(line, flush=True),
    )
    items = provisioner.run(Path(args.source))
    report = write_reports(state, items)
    print(f"report: {report}")
    return 1 if any(item.status == "refused" for item in items) else 0


def add_voices_arguments(parser: argparse.ArgumentParser) -> None:
    add_state_arguments(parser)
    parser.add_argument("--json", action="store_true", help="a JSON list instead of a table")


def run_voices(args: argparse.Namespace) -> int:
    from provisioning.provision import voices_listing

    listing = voices_listing(box_state(args))
    if args.json:
        print(json.dumps(listing, ensure_ascii=False, indent=2))
        return 0
    if not listing:
        print("no voices installed (kiosk provision SOURCE)")
    for v in listing:
        kept = ", ".join(f"v{k}" for k in v["kept"]) or "none"
        state = "enabled" if v["enabled"] else f"DISABLED (consent ended {v['valid_until']})"
        print(
            f"{v['id']} v{v['version']}  {v['text_policy']}  {state}  kept: {kept}  "
            f"engines: {', '.join(v['engines']) or 'torch only'}  {v['path']}"
        )
    return 0


def add_id_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="the voice's id (see kiosk voices)")
    add_state_arguments(parser)


def run_rollback(args: argparse.Namespace) -> int:
    from provisioning.provision import rollback

    print(rollback(box_state(args), args.id))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from provisioning.provision import remove

    print(remove(box_state(args), args.id))
    return 0


#: (command, help, add arguments, run)
COMMANDS = (
    ("provision", "install signed packs and revocation lists from a folder (a USB stick)",
     add_provision_arguments, run_provision),
    ("voices", "list the installed voices", add_voices_arguments, run_voices),
    ("rollback", "make the previous kept version of a voice active again", add_id_arguments,
     run_rollback),
    ("remove", "remove a voice and every installed version of it", add_id_arguments, run_remove),
)  # fmt: skip
