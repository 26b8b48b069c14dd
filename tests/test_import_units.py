"""The USB-import and inbox units and the udev rule: linted, and their sandbox checked.

`systemd-analyze verify` runs on the units as the box loads them (through
`devtools.unit_lint`); the directives that keep the stick harmless are read
back from the files; the unit's command lines are parsed by the real `kiosk`
parser, so a renamed flag breaks this test, not a museum's import; the udev
rule is evaluated for a stick, a disk and the events in between.
"""

from __future__ import annotations

import glob
import shlex
from pathlib import Path

import pytest

from appliance.cli import build_parser
from devtools.unit_lint import (
    UnitLintError,
    exec_programs,
    parse_udev_rules,
    udev_outcome,
    unit_directives,
    values,
    verify_units,
)
from provisioning.stick import MOUNT_ROOT, READ_OPTIONS, REPORT_OPTIONS, StickMount

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
IMPORT = SYSTEMD / "kiosk-import@.service"
INBOX_PATH = SYSTEMD / "kiosk-inbox.path"
INBOX = SYSTEMD / "kiosk-inbox.service"
RULES = SYSTEMD / "90-kiosk-usb.rules"
STATE = "/var/lib/kiosk"
#: The sandbox both provisioning units run in (the stick's data is untrusted).
SANDBOX = {
    "PrivateNetwork": "yes",
    "ProtectSystem": "strict",
    "ReadWritePaths": STATE,
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "User": "kiosk",
}


def test_units_verify_clean() -> None:
    verify_units(
        [IMPORT, INBOX_PATH, INBOX],
        ["kiosk-import@sdb1.service", "kiosk-inbox.path", "kiosk-inbox.service"],
    )


def test_verify_catches_a_mistake_in_these_units(tmp_path) -> None:
    broken = tmp_path / IMPORT.name
    broken.write_text(IMPORT.read_text().replace("PrivateNetwork=yes", "PrivateNetwork=ja"))
    with pytest.raises(UnitLintError, match="Failed to parse boolean value"):
        verify_units([broken], ["kiosk-import@sdb1.service"])


@pytest.mark.parametrize("unit", [IMPORT, INBOX], ids=lambda p: p.name)
def test_provisioning_runs_sandboxed(unit: Path) -> None:
    for key, expected in SANDBOX.items():
        assert values(unit, "Service", key) == [expected], key
    # ReadWritePaths= names the state folder once, and nothing else may be written.
    written = [v for k, v in unit_directives(unit)["Service"] if k.startswith("ReadWrite")]
    assert written == [STATE]
    assert not any(
        k in ("StateDirectory", "CacheDirectory", "LogsDirectory", "RuntimeDirectory")
        for k, _ in unit_directives(unit)["Service"]
    )


def _command(unit: Path, key: str) -> tuple[str, list[str]]:
    """(prefix, argv) of one Exec line, the instance named sdb1."""
    (line,) = values(unit, "Service", key)
    prefix = line[: len(line) - len(line.lstrip("+-@:!|"))]
    return prefix, shlex.split(line[len(prefix) :].replace("%I", "sdb1"))


def test_import_steps_privilege_and_the_kiosk_parser() -> None:
    steps = {key: _command(IMPORT, key) for key in ("ExecStartPre", "ExecStart", "ExecStopPost")}
    parser = build_parser()
    expected = {"ExecStartPre": ("+", "mount"), "ExecStart": ("", "provision"),
                "ExecStopPost": ("+", "finish")}  # fmt: skip
    for key, (prefix, argv) in steps.items():
        assert argv[0] == "/usr/bin/kiosk"
        args = parser.parse_args(argv[1:])
        # Only the mount and unmount steps are privileged; the one that reads the
        # stick runs as the kiosk user in the sandbox.
        assert (prefix, args.step) == expected[key]
        assert args.command == "import-stick" and args.devname == "sdb1"
        assert args.state == STATE  # the folder ReadWritePaths= allows
        assert (Path(args.mount_root), args.mount_tool) == (MOUNT_ROOT, "systemd-mount")
    # The mount the steps make: the stick read-only, nothing on it can run.
    stick = StickMount.of("sdb1")
    assert READ_OPTIONS == "ro,nosuid,nodev,noexec"
    assert REPORT_OPTIONS == "rw,nosuid,nodev,noexec"
    assert stick.mount_command(READ_OPTIONS)[0] == "systemd-mount"
    assert "--options=ro,nosuid,nodev,noexec" in stick.mount_command(READ_OPTIONS)
    assert "--fsck=no" in stick.mount_command(READ_OPTIONS)
    assert str(stick.where) == "/run/kiosk/stick-sdb1"
    # Nothing the units run lies where a stick is mounted.
    for unit in (IMPORT, INBOX):
        assert all(not p.startswith(str(MOUNT_ROOT)) for p in exec_programs(unit))
    # The import stops (and the finish step unmounts) when the stick is pulled.
    assert values(IMPORT, "Unit", "BindsTo") == ["dev-%i.device"]
    assert values(IMPORT, "Service", "Type") == ["oneshot"]


def test_inbox_watch_and_service() -> None:
    globs = values(INBOX_PATH, "Path", "PathExistsGlob")
    assert globs == [f"{STATE}/inbox/*.kvp", f"{STATE}/inbox/*.tar", f"{STATE}/inbox/*.json"]
    assert values(INBOX_PATH, "Path", "Unit") == ["kiosk-inbox.service"]
    assert not values(INBOX_PATH, "Path", "DirectoryNotEmpty")
    prefix, argv = _command(INBOX, "ExecStart")
    args = build_parser().parse_args(argv[1:])
    assert prefix == "" and args.command == "import-inbox" and args.state == STATE
    # A start limit ends a loop over an entry the service cannot move away.
    assert values(INBOX, "Unit", "StartLimitBurst") and values(
        INBOX, "Unit", "StartLimitIntervalSec"
    )


def test_inbox_globs_skip_copies_in_progress(tmp_path) -> None:
    """The .path unit's globs (glob(3), like Python's) never match a dot-name."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in (".chen-ama-2.kvp.tar", ".ansible_tmpabc.tar", ".rsync-partial.kvp"):
        (inbox / name).write_bytes(b"")
    patterns = [g.replace(f"{STATE}/inbox", str(inbox)) for g in
                values(INBOX_PATH, "Path", "PathExistsGlob")]  # fmt: skip
    assert [m for p in patterns for m in glob.glob(p)] == []
    (inbox / "chen-ama-2.kvp.tar").write_bytes(b"")
    assert [Path(m).name for p in patterns for m in glob.glob(p)] == ["chen-ama-2.kvp.tar"]


STICK = {"ACTION": "add", "SUBSYSTEM": "block", "KERNEL": "sdb1", "ID_BUS": "usb",
         "DEVTYPE": "partition", "ID_FS_USAGE": "filesystem", "ID_FS_TYPE": "vfat"}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "wanted"),
    [
        ({}, "kiosk-import@sdb1.service"),
        ({"ID_FS_TYPE": "exfat"}, "kiosk-import@sdb1.service"),
        ({"ACTION": "change"}, "kiosk-import@sdb1.service"),  # systemd keeps the device
        ({"KERNEL": "sdc", "DEVTYPE": "disk"}, "kiosk-import@sdc.service"),  # no partitions
        ({"ACTION": "remove"}, None),
        ({"ID_BUS": "ata"}, None),  # the box's own disk
        ({"ID_BUS": "nvme"}, None),
        ({"ID_FS_USAGE": "", "ID_FS_TYPE": "", "DEVTYPE": "disk", "KERNEL": "sdb"}, None),
        ({"ID_FS_USAGE": "crypto", "ID_FS_TYPE": "crypto_LUKS"}, None),
        ({"ID_FS_TYPE": "ext4"}, None),  # only what museum sticks carry is parsed
        ({"ID_FS_TYPE": "ntfs"}, None),
        ({"SUBSYSTEM": "usb"}, None),
    ],
)
def test_udev_rule(change: dict[str, str], wanted: str | None) -> None:
    outcome = udev_outcome(RULES.read_text(), {**STICK, **change})
    assert outcome.run == []
    if wanted is None:
        assert outcome.env == {} and outcome.tags == []
    else:
        assert outcome.env == {"SYSTEMD_WANTS": wanted} and outcome.tags == ["systemd"]


def test_udev_rule_runs_nothing() -> None:
    keys = {key for rule in parse_udev_rules(RULES.read_text()) for key, *_ in rule}
    assert "RUN" not in keys and "PROGRAM" not in keys and "IMPORT" not in keys
    # The checker sees a RUN when there is one (so the assertion above can fail).
    bad = RULES.read_text().replace('TAG+="systemd"', 'RUN+="/run/kiosk/stick-%k/autorun.sh"')
    assert udev_outcome(bad, STICK).run == ["/run/kiosk/stick-sdb1/autorun.sh"]
