"""The box's voice commands: `kiosk provision`, `voices`, `rollback`, `remove`,
`import-stick` (the udev-started USB import) and `import-inbox` (packs a fleet tool drops).

Argument parsing and printing only; the work is in `provisioning/` (the
state-folder layout in `provisioning.state`).  Every command takes `--state`
and `--config-dir` the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

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
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        metavar="N",
        help="cap on semantic tokens per segment for the health check and the cached phrases "
        "(default: the voice's own caps; a voice that never ends, like an untrained test voice, "
        "needs one)",
    )


def run_provision(args: argparse.Namespace) -> int:
    from appliance.say import export_on_demand
    from provisioning.provision import Provisioner, box_trust, write_reports

    if args.max_tokens is not None and args.max_tokens < 1:
        raise ValueError("--max-tokens: at least 1 (or leave it out: the voice's own caps)")
    state = box_state(args)
    trust = box_trust(config_dir(args.config_dir))
    caps = {}
    if args.max_tokens is not None:
        caps = {"health_tokens": args.max_tokens, "precache_tokens": args.max_tokens}
    provisioner = Provisioner(
        state,
        trust,
        allow_downgrade=args.allow_downgrade,
        backend=args.backend,
        export=export_on_demand,
        progress=lambda line: print(line, flush=True),
        **caps,
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


def _config(args: argparse.Namespace) -> Any:
    """The box's kiosk.toml (`--config`, $KIOSK_CONFIG, /etc/kiosk/kiosk.toml or defaults)."""
    from appliance.config import load_config

    return load_config(Path(args.config) if args.config else None)


def _import_state(args: argparse.Namespace, config: Any) -> State:
    """`--state` wins; else the config's state_dir (itself $KIOSK_STATE_DIR or the default)."""
    return State(Path(args.state) if args.state else config.state_dir)


def _stick_provision(args: argparse.Namespace, state: State, backend: str) -> Any:
    """The provisioning the stick and the inbox run: the box's trusted keys, the config's
    health-check backend, graphs exported on demand (the daemon's backend may need them)."""
    from appliance.say import export_on_demand
    from provisioning.provision import Provisioner, box_trust

    trust = box_trust(config_dir(args.config_dir))

    def provision(source: Path) -> list[Any]:
        provisioner = Provisioner(
            state,
            trust,
            backend=backend,
            export=export_on_demand,
            progress=lambda line: print(line, flush=True),
        )
        return provisioner.run(source)

    return provision


def add_import_stick_arguments(parser: argparse.ArgumentParser) -> None:
    from provisioning.stick import MOUNT_ROOT, TOOLS

    parser.add_argument(
        "devname", metavar="DEVNAME", help="the stick's partition as udev names it (sdb1)"
    )
    add_state_arguments(parser)
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="kiosk.toml for [provisioning] report_to_stick and backend (default "
        "$KIOSK_CONFIG, /etc/kiosk/kiosk.toml)",
    )
    parser.add_argument(
        "--step",
        choices=("all", "mount", "provision", "finish"),
        default="all",
        help="one step of the import (kiosk-import@.service runs mount and finish as root, "
        "provision without privileges); default all three in this process",
    )
    parser.add_argument(
        "--mount-root",
        default=str(MOUNT_ROOT),
        metavar="DIR",
        help=f"where the stick is mounted as stick-DEVNAME (default {MOUNT_ROOT})",
    )
    parser.add_argument(
        "--mount-tool",
        choices=TOOLS,
        default=TOOLS[0],
        help="systemd-mount (default) or mount where systemd is not running",
    )


def run_import_stick(args: argparse.Namespace) -> int:
    from provisioning.stick import (
        StickMount,
        SystemRunner,
        run_import,
        step_finish,
        step_mount,
        step_provision,
    )

    config = _config(args)
    state = _import_state(args, config)
    stick = StickMount.of(args.devname, Path(args.mount_root), args.mount_tool)
    runner = SystemRunner()
    switch = config.provisioning.report_to_stick
    if args.step == "mount":
        step_mount(stick, state, runner)
        print(f"{stick.device} mounted read-only at {stick.where}")
        return 0
    if args.step == "finish":
        print(step_finish(stick, state, runner, report_to_stick=switch))
        return 0
    provision = _stick_provision(args, state, config.provisioning.backend)
    if args.step == "provision":
        items = step_provision(stick, state, provision, runner)
    else:
        result = run_import(stick, state, provision, report_to_stick=switch, runner=runner)
        items = result.items
        print(result.finish)
    print(f"report: {state.reports}")
    return 1 if any(item.status == "refused" for item in items) else 0


def add_import_inbox_arguments(parser: argparse.ArgumentParser) -> None:
    add_state_arguments(parser)
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="kiosk.toml for [provisioning] backend (default $KIOSK_CONFIG, /etc/kiosk/kiosk.toml)",
    )


def run_import_inbox(args: argparse.Namespace) -> int:
    from provisioning.stick import INBOX_DONE, import_inbox

    config = _config(args)
    state = _import_state(args, config)
    items = import_inbox(state, _stick_provision(args, state, config.provisioning.backend))
    print(f"report: {state.reports}; the delivery is in {state.root / INBOX_DONE}")
    return 1 if any(item.status == "refused" for item in items) else 0


#: (command, help, add arguments, run)
COMMANDS = (
    ("provision", "install signed packs and revocation lists from a folder (a USB stick)",
     add_provision_arguments, run_provision),
    ("voices", "list the installed voices", add_voices_arguments, run_voices),
    ("rollback", "make the previous kept version of a voice active again", add_id_arguments,
     run_rollback),
    ("remove", "remove a voice and every installed version of it", add_id_arguments, run_remove),
    ("import-stick", "import packs from a USB stick (mount read-only, provision, unmount, "
     "report)", add_import_stick_arguments, run_import_stick),
    ("import-inbox", "provision the packs dropped into <state>/inbox/, then move them out",
     add_import_inbox_arguments, run_import_inbox),
)  # fmt: skip
