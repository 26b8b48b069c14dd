"""A USB stick from the udev event to the report on the stick, and the inbox folder.

The stick is untrusted.  It is mounted `ro,nosuid,nodev,noexec` at
`/run/kiosk/stick-<DEVNAME>`, nothing on it is ever executed (and the kernel
would refuse to), packs and revocation lists are read from it by the
provisioning, and it is unmounted.  Only then, and only when the box's config
says `[provisioning] report_to_stick = true`, is it mounted a second time,
`rw,nosuid,nodev,noexec`, for as long as it takes to write `kiosk-report.txt`
and `kiosk-report.json` (each written under a fresh name, fsynced, renamed,
the folder fsynced) before it is unmounted again.

The import runs in three steps so that privilege is needed only where it must
be, and never by the process that reads the stick (`kiosk-import@.service`):

    mount      (root)          systemd-mount the stick read-only
    provision  (no privilege)  `kiosk provision` of the mount point; the report
                               for the stick is left in `<state>/reports/stick-<DEVNAME>/`
    finish     (root)          systemd-umount; if the switch is on, the second
                               short read-write mount for the two report files

The finish step reads only the box's own files; it writes the stick's report
only if the provision step of the same run (systemd's `$INVOCATION_ID`) left
it, else a short report saying the import did not finish.  `run_import`
chains the three steps in one process for a technician at a root shell.

Every mount and unmount goes through a `Runner` (the command it would run),
so tests check the exact command lines without root or a real stick.

The inbox (`<state>/inbox/`, watched by `kiosk-inbox.path`) is where a fleet
tool drops packs.  Names starting with a dot are never taken (a copy in
progress: copy as `.NAME`, then rename to `NAME`; Ansible's and rsync's
temporary files are dot-names too).  Every other entry is first renamed into
a fresh `<state>/inbox-done/<UTC time>/`, then provisioned from there, and the
report is written beside it.  The inbox holds no pack again at once, so the
`.path` unit never triggers in a loop; only the latest delivery is kept (a
technician can look at what came; the disk holds one delivery at most).  A
delivery whose run was cut off (no report in its folder) is provisioned again
on the next run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engines.durable_files import atomic_write_bytes, fsync_dir
from provisioning.provision import REPORT_JSON, REPORT_TXT, ReportItem, report_files, write_reports
from provisioning.state import State

log = logging.getLogger(__name__)

#: Mount options for reading the stick: nothing on it can run, be a device or set an ID.
READ_OPTIONS = "ro,nosuid,nodev,noexec"
#: Mount options for the short second mount that writes the two report files.
REPORT_OPTIONS = "rw,nosuid,nodev,noexec"
#: Where sticks are mounted (tmpfs, root's; not on anybody's PATH).
MOUNT_ROOT = Path("/run/kiosk")
#: The mount tools: `systemd-mount` on the box (systemd tracks the mount as a unit and
#: can stop it when the stick is pulled), plain `mount` where systemd is not running.
TOOLS = ("systemd-mount", "mount")
#: Seconds a mount or unmount may take before the import gives up.
COMMAND_TIMEOUT = 120
#: The folder of the stick's report between the provision and finish steps.
PENDING_PREFIX = "stick-"
RUN_FILE = "run.json"
#: Inbox layout below the state folder.
INBOX = "inbox"
INBOX_DONE = "inbox-done"
#: Deliveries kept in `inbox-done/` after a run (the latest).
KEEP_DELIVERIES = 1

_DEVNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class StickError(ValueError):
    """A stick that cannot be imported (bad name, mount failed); says what to check."""


# --- the runner seam ---------------------------------------------------------------------


class Runner(Protocol):
    """Runs the mount tools.  The system runner runs them; a test's runner records them."""

    def run(self, argv: Sequence[str]) -> None:
        """Run one command; raise StickError when it fails."""

    def is_mount(self, path: Path) -> bool:
        """Whether `path` is a mount point now."""


class SystemRunner:
    """The real thing: subprocesses with a timeout, the kernel's view of mounts."""

    def run(self, argv: Sequence[str]) -> None:
        log.info("running: %s", " ".join(argv))
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StickError(f"{argv[0]} could not run: {exc}") from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise StickError(
                f"`{' '.join(argv)}` failed (exit {done.returncode}): "
                f"{detail[-1] if detail else 'no message'}"
            )

    def is_mount(self, path: Path) -> bool:
        return os.path.ismount(path)


@dataclass(frozen=True)
class StickMount:
    """The mount point of one stick and the commands that mount and unmount it."""

    devname: str
    """The kernel's name of the partition (udev's %k), e.g. `sdb1`."""
    root: Path = MOUNT_ROOT
    """The folder the mount point is made in."""
    tool: str = "systemd-mount"
    """`systemd-mount` (the box) or `mount` (no systemd running, e.g. a container)."""

    def __post_init__(self) -> None:
        if not _DEVNAME.fullmatch(self.devname) or ".." in self.devname:
            raise StickError(
                f"{self.devname!r}: not a kernel device name; give the partition's name as "
                "udev does (sdb1), without /dev/"
            )
        if self.tool not in TOOLS:
            raise StickError(f"mount tool {self.tool!r}: choose {' or '.join(TOOLS)}")

    @classmethod
    def of(cls, name: str, root: Path = MOUNT_ROOT, tool: str = "systemd-mount") -> StickMount:
        """From `sdb1` or `/dev/sdb1`."""
        return cls(name.removeprefix("/dev/"), root, tool)

    @property
    def device(self) -> Path:
        return Path("/dev") / self.devname

    @property
    def where(self) -> Path:
        return self.root / f"stick-{self.devname}"

    def mount_command(self, options: str) -> list[str]:
        if self.tool == "systemd-mount":
            # No fsck (it would write to the stick), no password prompt, and the
            # transient mount unit is unloaded when it stops, even after a failure.
            return [
                "systemd-mount",
                "--no-ask-password",
                "--collect",
                "--fsck=no",
                f"--options={options}",
                "--",
                str(self.device),
                str(self.where),
            ]
        return ["mount", "-o", options, "--", str(self.device), str(self.where)]

    def umount_command(self) -> list[str]:
        if self.tool == "systemd-mount":
            return ["systemd-umount", "--no-ask-password", "--", str(self.where)]
        return ["umount", "--", str(self.where)]

    def mount(self, runner: Runner, options: str) -> None:
        if runner.is_mount(self.where):
            raise StickError(
                f"{self.where} is mounted already (an import of this stick still running?); "
                "wait for it, or unmount it"
            )
        if self.tool == "mount":  # systemd-mount makes the mount point itself
            self.where.mkdir(parents=True, exist_ok=True, mode=0o700)
        runner.run(self.mount_command(options))

    def unmount(self, runner: Runner) -> None:
        """Unmount if mounted; remove the empty mount point that `mount` needed."""
        if runner.is_mount(self.where):
            runner.run(self.umount_command())
        if self.tool == "mount":
            with contextlib.suppress(OSError):
                self.where.rmdir()


# --- the three steps ---------------------------------------------------------------------

#: Runs the provisioning over a folder and returns its report lines (built by the caller
#: with the box's trusted keys and backend: provisioning never reads the config itself).
Provision = Callable[[Path], list[ReportItem]]


def pending_dir(state: State, stick: StickMount) -> Path:
    """Where the provision step leaves the report the finish step writes to the stick."""
    return state.reports / f"{PENDING_PREFIX}{stick.devname}"


def _invocation() -> str | None:
    """systemd's ID of this run of the unit: the same in every step of one import."""
    return os.environ.get("INVOCATION_ID") or None


def step_mount(stick: StickMount, state: State, runner: Runner) -> None:
    """Mount the stick read-only (forgetting any report a cut-off earlier run left)."""
    shutil.rmtree(pending_dir(state, stick), ignore_errors=True)
    stick.mount(runner, READ_OPTIONS)
    log.info("%s mounted %s at %s", stick.device, READ_OPTIONS, stick.where)


def step_provision(
    stick: StickMount, state: State, provision: Provision, runner: Runner
) -> list[ReportItem]:
    """Provision from the mount point; the report goes to `<state>/reports/` and is kept
    for the finish step."""
    if not runner.is_mount(stick.where):
        raise StickError(
            f"{stick.where} is not mounted; the mount step did not run or failed (see "
            f"`journalctl -u kiosk-import@{stick.devname}.service`)"
        )
    items = provision(stick.where)
    now = dt.datetime.now(dt.timezone.utc)
    write_reports(state, items, now)
    pending = pending_dir(state, stick)
    shutil.rmtree(pending, ignore_errors=True)
    for name, data in report_files(items, now).items():
        atomic_write_bytes(pending / name, data)
    record = {"invocation": _invocation(), "device": stick.devname, "time": now.isoformat()}
    atomic_write_bytes(pending / RUN_FILE, (json.dumps(record) + "\n").encode())
    return items


def step_finish(stick: StickMount, state: State, runner: Runner, *, report_to_stick: bool) -> str:
    """Unmount; with the switch on, mount again read-write only to write the two reports.

    Returns a line for the log.  A failure to write the report is logged and
    reported, never raised: the voices are installed whatever the stick allows.
    """
    stick.unmount(runner)
    pending = pending_dir(state, stick)
    files = _pending_report(pending, stick)
    shutil.rmtree(pending, ignore_errors=True)
    if not report_to_stick:
        return f"{stick.device}: unmounted; no report on the stick (report_to_stick is off)"
    try:
        stick.mount(runner, REPORT_OPTIONS)
    except StickError as exc:
        log.warning("the report could not be written to the stick: %s", exc)
        return f"{stick.device}: unmounted; the report could not be written to it ({exc})"
    try:
        for name, data in files.items():
            write_on_stick(stick.where, name, data)
    except OSError as exc:
        log.warning("the report could not be written to the stick: %s", exc)
        return f"{stick.device}: the report could not be written to it ({exc})"
    finally:
        stick.unmount(runner)
    return f"{stick.device}: unmounted; {REPORT_TXT} and {REPORT_JSON} written to the stick"


def _pending_report(pending: Path, stick: StickMount) -> dict[str, bytes]:
    """The report of this run's provision step, or one saying the import did not finish."""
    reason = ""
    try:
        record = json.loads((pending / RUN_FILE).read_bytes())
        if record.get("invocation") != _invocation():
            reason = "the report found on the box is from another run"
        else:
            return {name: (pending / name).read_bytes() for name in (REPORT_TXT, REPORT_JSON)}
    except (OSError, ValueError, AttributeError):
        reason = "the provisioning step ended without a report"
    result = os.environ.get("SERVICE_RESULT")
    if result and result != "success":
        reason += f" ({result}, exit status {os.environ.get('EXIT_STATUS', '?')})"
    now = dt.datetime.now(dt.timezone.utc)
    hint = f"journalctl -u kiosk-import@{stick.devname}.service"
    text = (
        f"the import of this stick did not finish: {reason}; the box's log says what was "
        f"installed, if anything ({hint})\n"
    )
    payload = {"time": now.isoformat(), "items": [], "error": f"{reason}; see {hint}"}
    data = (json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()
    return {REPORT_TXT: text.encode(), REPORT_JSON: data}


def write_on_stick(folder: Path, name: str, data: bytes) -> Path:
    """Write `folder/name` without following anything the stick planted.

    The temporary file is created with O_EXCL|O_NOFOLLOW (a link of that name
    makes it fail instead of writing through it), fsynced, and renamed over
    the target (a rename replaces a link or FIFO, it never writes into one).
    """
    target = folder / name
    tmp = folder / f".{name}.kiosk-tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(folder)
    return target


@dataclass(frozen=True)
class ImportResult:
    """What one whole import did: the report lines and what became of the stick."""

    items: list[ReportItem]
    finish: str


def run_import(
    stick: StickMount,
    state: State,
    provision: Provision,
    *,
    report_to_stick: bool,
    runner: Runner | None = None,
) -> ImportResult:
    """mount → provision → finish in one process (the finish step runs whatever happened)."""
    runner = runner or SystemRunner()
    step_mount(stick, state, runner)
    items: list[ReportItem] = []
    try:
        items = step_provision(stick, state, provision, runner)
    finally:
        finish = step_finish(stick, state, runner, report_to_stick=report_to_stick)
        log.info("%s", finish)
    return ImportResult(items, finish)


# --- the inbox ---------------------------------------------------------------------------


def inbox_dir(state: State) -> Path:
    return state.root / INBOX


def import_inbox(
    state: State, provision: Provision, now: dt.datetime | None = None
) -> list[ReportItem]:
    """Take every entry out of `<state>/inbox/` and provision from where it went.

    Deliveries left by a run that was cut off come first.  The report goes to
    `<state>/reports/` and into the delivery's folder.
    """
    inbox = inbox_dir(state)
    done = state.root / INBOX_DONE
    inbox.mkdir(parents=True, exist_ok=True)
    done.mkdir(parents=True, exist_ok=True)
    now = now or dt.datetime.now(dt.timezone.utc)
    todo = [d for d in sorted(done.iterdir()) if d.is_dir() and not (d / REPORT_TXT).exists()]
    entries = sorted(e for e in inbox.iterdir() if not e.name.startswith("."))
    stuck: list[ReportItem] = []
    if entries:
        delivery = done / now.strftime("%Y%m%dT%H%M%S%fZ")
        delivery.mkdir()
        for entry in entries:  # renames on one file system: the inbox is empty at once
            try:
                os.replace(entry, delivery / entry.name)
            except OSError as exc:
                stuck.append(_stuck(entry, exc))
        fsync_dir(inbox)
        fsync_dir(delivery)
        todo.append(delivery)
    items: list[ReportItem] = []
    for delivery in todo:
        found = provision(delivery)
        if delivery == todo[-1] and entries:
            found = stuck + found
        for name, data in report_files(found, now).items():
            atomic_write_bytes(delivery / name, data)
        items += found
    if todo:
        write_reports(state, items, now)
    finished = sorted(d for d in done.iterdir() if d.is_dir() and (d / REPORT_TXT).exists())
    for old in finished[:-KEEP_DELIVERIES]:
        shutil.rmtree(old, ignore_errors=True)
    return items


def _stuck(entry: Path, exc: OSError) -> ReportItem:
    """An entry this user may not move out of the inbox (a folder another user owns)."""
    log.error("cannot take %s out of the inbox: %s", entry, exc)
    return ReportItem(
        entry.name,
        "pack",
        None,
        None,
        "refused",
        f"{entry.name}: cannot be taken out of the inbox ({exc.strerror}); deliver packs as "
        "the kiosk user, or as .tar files, then delete this entry",
        0.0,
    )


__all__ = [
    "INBOX",
    "INBOX_DONE",
    "MOUNT_ROOT",
    "READ_OPTIONS",
    "REPORT_OPTIONS",
    "ImportResult",
    "Runner",
    "StickError",
    "StickMount",
    "SystemRunner",
    "import_inbox",
    "inbox_dir",
    "pending_dir",
    "run_import",
    "step_finish",
    "step_mount",
    "step_provision",
    "write_on_stick",
]
