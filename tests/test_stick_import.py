"""The USB stick import and the inbox: `kiosk import-stick`, `kiosk import-inbox`.

A real signed pack (devtools.sample_packs) is installed for real into a fresh
state folder.  The mounts go through a recording runner that stands in for
`systemd-mount`: it "mounts" a folder standing in for the stick by a symbolic
link at the mount point, so the tests check the exact command lines, the order
of the two mounts, that nothing was written to the stick while it was mounted
read-only, and that nothing on it ran.  As root with loop devices, one test
mounts a real ext4 image with the real `mount` and checks what the kernel
enforces (this kernel may lack vfat; the mount options are the same).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from appliance.cli import main
from devtools import sample_packs
from provisioning import stick as stick_module
from provisioning.packing import tar_pack
from provisioning.provision import REPORT_JSON, REPORT_TXT, Provisioner, ReportItem, box_trust
from provisioning.state import State
from provisioning.stick import (
    INBOX_DONE,
    READ_OPTIONS,
    REPORT_OPTIONS,
    StickError,
    StickMount,
    SystemRunner,
    import_inbox,
    run_import,
    step_finish,
    step_mount,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A program on the stick that would leave a mark if anything ran it.
TRAP = "#!/bin/sh\ntouch {mark}\n"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The kit's signed v1 pack, its .tar, and a box config folder trusting the key."""
    root = tmp_path_factory.mktemp("stick")
    kit = sample_packs.write_kit(root / "kit")
    keys = sample_packs.make_keys(root / "keys")
    pack = sample_packs.build_pack(kit, keys, root / "packs")
    config_dir = sample_packs.box_config_dir(root / "box-config", keys)
    (root / "tars").mkdir()
    made = {
        "pack": pack,
        "tar": tar_pack(pack, root / "tars" / f"{pack.name}.tar"),
        "config_dir": config_dir,
        "box_state": root / "box-state",
        "root": root,
    }
    state = State(made["box_state"])
    (item,) = _provision_for(made, state)(pack.parent)
    assert item.status == "activated", item.reason
    return made


def installed_box(made: dict[str, Path], folder: Path) -> Path:
    """A state folder with the pack installed already (hard links of the module's box:
    a run that finds the pack unchanged changes none of its files)."""
    shutil.copytree(made["box_state"], folder, symlinks=True, copy_function=os.link)
    return folder


class RecordingRunner:
    """Records every command; `mount` links the mount point to the stand-in stick."""

    def __init__(self, stick: Path) -> None:
        self.stick = stick
        self.commands: list[list[str]] = []
        self.mounted: dict[Path, str] = {}
        self.snapshot: dict[str, str] = {}
        self.changed_while_read_only: list[str] = []

    def run(self, argv: Sequence[str]) -> None:
        argv = list(argv)
        self.commands.append(argv)
        where = Path(argv[-1])
        if argv[0] in ("systemd-mount", "mount"):
            options = next(a.split("=", 1)[1] for a in argv if a.startswith("--options="))
            where.parent.mkdir(parents=True, exist_ok=True)
            where.symlink_to(self.stick)
            self.mounted[where] = options
            self.snapshot = tree(self.stick)
        else:
            if self.mounted.pop(where) == READ_OPTIONS and tree(self.stick) != self.snapshot:
                self.changed_while_read_only.append(str(where))
            where.unlink()

    def is_mount(self, path: Path) -> bool:
        return Path(path) in self.mounted


def tree(folder: Path) -> dict[str, str]:
    """Every entry under `folder` with the SHA-256 of its bytes (or its link target)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def make_stick(folder: Path, made: dict[str, Path], mark: Path, outside: Path) -> Path:
    """A stick with the pack, programs that would leave `mark`, and links that point out."""
    folder.mkdir(parents=True)
    shutil.copytree(made["pack"], folder / made["pack"].name)
    for name in ("autorun.sh", "kiosk", "install.sh"):
        (folder / name).write_text(TRAP.format(mark=mark))
        (folder / name).chmod(0o755)
    # A report written through one of these links would land outside the stick.
    (folder / REPORT_TXT).symlink_to(outside)
    (folder / f".{REPORT_JSON}.kiosk-tmp").symlink_to(outside)
    return folder


def config_file(folder: Path, report_to_stick: bool) -> Path:
    path = folder / "kiosk.toml"
    switch = str(report_to_stick).lower()
    path.write_text(f'[provisioning]\nreport_to_stick = {switch}\nbackend = "torch-eager"\n')
    return path


def mount_lines(where: Path, device: str, options: str) -> list[str]:
    return ["systemd-mount", "--no-ask-password", "--collect", "--fsck=no",
            f"--options={options}", "--", device, str(where)]  # fmt: skip


def test_import_stick_writes_the_report_through_a_second_short_mount(
    made, tmp_path, monkeypatch, capsys
) -> None:
    mark, outside = tmp_path / "ran", tmp_path / "outside.txt"
    outside.write_text("not the stick's\n")
    stick = make_stick(tmp_path / "stick", made, mark, outside)
    runner = RecordingRunner(stick)
    monkeypatch.setattr(stick_module, "SystemRunner", lambda: runner)
    state, mounts = installed_box(made, tmp_path / "state"), tmp_path / "run-kiosk"
    code = main(["import-stick", "sdb1", "--state", str(state),
                 "--config-dir", str(made["config_dir"]),
                 "--config", str(config_file(tmp_path, report_to_stick=True)),
                 "--mount-root", str(mounts)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    where = mounts / "stick-sdb1"
    umount = ["systemd-umount", "--no-ask-password", "--", str(where)]
    assert runner.commands == [
        mount_lines(where, "/dev/sdb1", "ro,nosuid,nodev,noexec"),
        umount,
        mount_lines(where, "/dev/sdb1", "rw,nosuid,nodev,noexec"),
        umount,
    ]
    assert runner.changed_while_read_only == [] and not runner.mounted
    assert not mark.exists(), "a program on the stick was run"
    assert outside.read_text() == "not the stick's\n", "a link on the stick was followed"
    # The stick's report is the box's, byte for byte; the links were replaced, not followed.
    for name in (REPORT_TXT, REPORT_JSON):
        assert not (stick / name).is_symlink()
        assert (stick / name).read_bytes() == (state / "reports" / name).read_bytes()
    assert not (stick / f".{REPORT_JSON}.kiosk-tmp").exists()
    report = json.loads((stick / REPORT_JSON).read_text())
    (item,) = report["items"]
    assert set(item) == {"source", "kind", "voice", "version", "status", "reason", "seconds"}
    assert (item["source"], item["kind"], item["voice"], item["version"], item["status"]) == (
        "chen-ama-1.kvp", "voice", "chen-ama", 1, "unchanged")  # fmt: skip
    assert (
        stick / REPORT_TXT
    ).read_text() == "unchanged chen-ama v1 (chen-ama-1.kvp: already active)\n"
    assert State(state).active("chen-ama") is not None
    assert "written to the stick" in out
    # The handoff between the steps is consumed.
    assert not (state / "reports" / "stick-sdb1").exists()


def test_switch_off_nothing_is_written_to_the_stick(made, tmp_path, monkeypatch, capsys) -> None:
    mark, outside = tmp_path / "ran", tmp_path / "outside.txt"
    stick = make_stick(tmp_path / "stick", made, mark, outside)
    shutil.rmtree(stick / made["pack"].name)  # the switch is what matters here, not a pack
    before = tree(stick)
    runner = RecordingRunner(stick)
    monkeypatch.setattr(stick_module, "SystemRunner", lambda: runner)
    state = tmp_path / "state"
    code = main(["import-stick", "/dev/sdc1", "--state", str(state),
                 "--config-dir", str(made["config_dir"]),
                 "--config", str(config_file(tmp_path, report_to_stick=False)),
                 "--mount-root", str(tmp_path / "m")])  # fmt: skip
    assert code == 0, capsys.readouterr()
    where = tmp_path / "m" / "stick-sdc1"
    assert runner.commands == [
        mount_lines(where, "/dev/sdc1", READ_OPTIONS),
        ["systemd-umount", "--no-ask-password", "--", str(where)],
    ]
    assert tree(stick) == before and not mark.exists()
    assert (state / "reports" / REPORT_TXT).read_text().startswith("nothing to do")


def test_the_units_three_steps_hand_the_report_over_by_invocation(
    tmp_path, monkeypatch, capsys
) -> None:
    """mount / provision / finish as three processes would run them; a finish whose
    provision step never ran reports that on the stick instead of an older report."""
    stick = tmp_path / "stick"
    stick.mkdir()
    runner = RecordingRunner(stick)
    state = State(tmp_path / "state")
    mount = StickMount.of("sdd1", tmp_path / "m")
    monkeypatch.setenv("INVOCATION_ID", "run-a")
    step_mount(mount, state, runner)
    items = stick_module.step_provision(mount, state, lambda source: [], runner)
    assert items == []
    monkeypatch.setenv("INVOCATION_ID", "run-b")  # the next insertion: mount, then no provision
    line = step_finish(mount, state, runner, report_to_stick=True)
    assert "written to the stick" in line
    assert (
        "did not finish: the report found on the box is from another run"
        in (stick / REPORT_TXT).read_text()
    )
    monkeypatch.setenv("SERVICE_RESULT", "exit-code")
    monkeypatch.setenv("EXIT_STATUS", "2")
    step_mount(mount, state, runner)
    step_finish(mount, state, runner, report_to_stick=True)
    report = json.loads((stick / REPORT_JSON).read_text())
    assert report["items"] == []
    assert "ended without a report (exit-code, exit status 2)" in report["error"]
    assert "journalctl -u kiosk-import@sdd1.service" in report["error"]
    # The same run's report goes through.
    monkeypatch.delenv("SERVICE_RESULT")
    step_mount(mount, state, runner)
    stick_module.step_provision(mount, state, lambda source: [], runner)
    step_finish(mount, state, runner, report_to_stick=True)
    assert (stick / REPORT_TXT).read_text().startswith("nothing to do")
    assert [c[0] for c in runner.commands].count("systemd-mount") == 6


def test_provision_step_refuses_a_folder_that_is_not_mounted(made, tmp_path, capsys) -> None:
    where = tmp_path / "m" / "stick-sde1"
    where.mkdir(parents=True)  # an empty folder on the root file system, not the stick
    code = main(["import-stick", "sde1", "--step", "provision", "--state",
                 str(tmp_path / "state"), "--config-dir", str(made["config_dir"]),
                 "--config", str(config_file(tmp_path, False)),
                 "--mount-root", str(tmp_path / "m")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "is not mounted; the mount step did not run" in err
    assert not (tmp_path / "state" / "reports" / REPORT_TXT).exists()


@pytest.mark.parametrize("name", ["../sda", "sd b", "", "-o", "a/b"])
def test_a_device_name_is_a_kernel_name(name: str) -> None:
    with pytest.raises(StickError, match="not a kernel device name"):
        StickMount.of(name)


def test_plain_mount_commands() -> None:
    stick = StickMount.of("/dev/sdb1", Path("/run/kiosk"), "mount")
    assert stick.mount_command(READ_OPTIONS) == [
        "mount", "-o", "ro,nosuid,nodev,noexec", "--", "/dev/sdb1", "/run/kiosk/stick-sdb1",
    ]  # fmt: skip
    assert stick.mount_command(REPORT_OPTIONS)[2] == "rw,nosuid,nodev,noexec"
    assert stick.umount_command() == ["umount", "--", "/run/kiosk/stick-sdb1"]


#: A stand-in for kioskd: says it is up, then waits for SIGHUP and says it heard it.
STAND_IN_DAEMON = """
import pathlib, signal, sys, time
mark = pathlib.Path(sys.argv[1])
def hup(*_):
    mark.write_text("SIGHUP")
    sys.exit(0)
signal.signal(signal.SIGHUP, hup)
mark.write_text("up")
time.sleep(60)
sys.exit(3)
"""


def _wait_for(path: Path, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def _provision_for(made: dict[str, Path], state: State):
    def provision(source: Path) -> list[ReportItem]:
        trust = box_trust(made["config_dir"])
        return Provisioner(
            state,
            trust,
            health_tokens=sample_packs.HEALTH_TOKENS,
            precache_tokens=sample_packs.HEALTH_TOKENS,  # the untrained voice never ends
            progress=lambda line: None,
        ).run(source)

    return provision


def test_inbox_takes_every_finished_delivery_and_keeps_the_latest(made, tmp_path) -> None:
    state = State(tmp_path / "state")
    inbox = state.root / "inbox"
    inbox.mkdir(parents=True)
    shutil.copyfile(made["tar"], inbox / made["tar"].name)
    (inbox / "notes.txt").write_text("from the fleet tool\n")
    (inbox / ".copying.tar").write_bytes(b"half a pack")  # a copy in progress: left alone
    # A running daemon is told, without a restart: SIGHUP to its PID, voices.changed.
    heard = tmp_path / "heard"
    daemon = subprocess.Popen([sys.executable, "-c", STAND_IN_DAEMON, str(heard)])
    try:
        _wait_for(heard)
        heard.unlink()
        (state.root / "kioskd.pid").write_text(f"{daemon.pid}\n")
        items = import_inbox(state, _provision_for(made, state))
        assert daemon.wait(timeout=20) == 0
    finally:
        daemon.kill()
    assert heard.read_text() == "SIGHUP"
    assert json.loads((state.root / "voices.changed").read_text())["counter"] == 1
    assert [(i.source, i.status) for i in items] == [("chen-ama-1.kvp.tar", "activated")]
    assert sorted(p.name for p in inbox.iterdir()) == [".copying.tar"]
    (first,) = (state.root / INBOX_DONE).iterdir()
    assert sorted(p.name for p in first.iterdir()) == sorted(
        ["chen-ama-1.kvp.tar", "notes.txt", REPORT_TXT, REPORT_JSON]
    )
    assert (first / REPORT_JSON).read_bytes() == (state.reports / REPORT_JSON).read_bytes()
    # The next delivery replaces the kept one; a delivery whose run was cut off is redone.
    os.replace(inbox / ".copying.tar", inbox / "again.tar")
    shutil.copyfile(made["tar"], inbox / "again.tar")
    cut_off = state.root / INBOX_DONE / "00000000T000000000000Z"
    cut_off.mkdir()
    shutil.copyfile(made["tar"], cut_off / "cut-off.tar")
    items = import_inbox(state, _provision_for(made, state))
    assert [(i.source, i.status, i.reason) for i in items] == [
        ("cut-off.tar", "unchanged", "already active"),
        ("again.tar", "unchanged", "already active"),
    ]
    assert list(inbox.iterdir()) == []
    (latest,) = (state.root / INBOX_DONE).iterdir()
    assert (latest / "again.tar").exists() and latest.name != first.name


def test_inbox_entry_that_cannot_be_moved_is_reported(made, tmp_path, monkeypatch) -> None:
    state = State(tmp_path / "state")
    (state.root / "inbox" / "root-owned.kvp").mkdir(parents=True)
    real = os.replace

    def replace(src, dst) -> None:
        if Path(src).name == "root-owned.kvp":
            raise PermissionError(13, "Permission denied")
        real(src, dst)

    monkeypatch.setattr(stick_module.os, "replace", replace)
    items = import_inbox(state, lambda source: [])
    (item,) = items
    assert item.status == "refused" and "deliver packs as the kiosk user" in item.reason
    assert "root-owned.kvp" in (state.reports / REPORT_TXT).read_text()


def test_import_inbox_command(made, tmp_path, capsys) -> None:
    inbox = tmp_path / "state" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "unsigned.kvp.tar").write_bytes(b"not a tar at all")
    config = config_file(tmp_path, False)
    code = main(["import-inbox", "--state", str(tmp_path / "state"), "--config-dir",
                 str(made["config_dir"]), "--config", str(config)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1 and "refused: " in out and "inbox-done" in out
    assert list(inbox.iterdir()) == []


def _loop_mount_works(tmp: Path) -> str | None:
    """Why a real loop mount cannot be tried here, or None."""
    if os.geteuid() != 0:
        return "needs root for loop devices and mount"
    if not all(shutil.which(t) for t in ("losetup", "mkfs.ext4", "mount", "umount")):
        return "needs losetup, mkfs.ext4 (e2fsprogs), mount"
    image = tmp / "probe.img"
    with open(image, "wb") as handle:
        handle.truncate(4 << 20)
    try:
        subprocess.run(["mkfs.ext4", "-q", str(image)], check=True, capture_output=True)
        (tmp / "probe").mkdir()
        subprocess.run(["mount", "-o", "loop,ro", str(image), str(tmp / "probe")],
                       check=True, capture_output=True)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        return f"loop mounts fail here: {exc.stderr.decode(errors='replace').strip()}"
    subprocess.run(["umount", str(tmp / "probe")], check=True)
    return None


def test_a_real_stick_image_mounted_read_only_noexec(made, tmp_path) -> None:
    reason = _loop_mount_works(tmp_path)
    if reason:
        pytest.skip(reason)
    mark, outside = tmp_path / "ran", tmp_path / "outside.txt"
    outside.write_text("not the stick's\n")
    content = make_stick(tmp_path / "content", made, mark, outside)
    image = tmp_path / "stick.img"
    with open(image, "wb") as handle:
        handle.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(content), str(image)], check=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    seen: dict[str, object] = {}
    state = State(installed_box(made, tmp_path / "state"))
    provision = _provision_for(made, state)

    def provision_and_probe(source: Path) -> list[ReportItem]:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        seen["options"] = next(line.split()[3] for line in mounts if line.split()[1] == str(source))
        try:
            (source / "written").write_text("x")
        except OSError as exc:
            seen["write"] = exc.errno
        try:
            subprocess.run([str(source / "autorun.sh")], check=False)
        except PermissionError:
            seen["exec"] = "refused"
        return provision(source)

    try:
        stick = StickMount.of(device, tmp_path / "run-kiosk", "mount")
        result = run_import(stick, state, provision_and_probe, report_to_stick=True,
                            runner=SystemRunner())  # fmt: skip
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(str(seen["options"]).split(","))
    assert seen["write"] == 30  # EROFS
    assert seen["exec"] == "refused" and not mark.exists()
    assert [(i.source, i.status) for i in result.items] == [("chen-ama-1.kvp", "unchanged")]
    assert not os.path.ismount(tmp_path / "run-kiosk" / f"stick-{Path(device).name}")
    check = tmp_path / "check"
    check.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(image), str(check)], check=True)
    try:
        assert (check / REPORT_JSON).read_bytes() == (state.reports / REPORT_JSON).read_bytes()
        assert not (check / REPORT_TXT).is_symlink()
    finally:
        subprocess.run(["umount", str(check)], check=True)
    assert outside.read_text() == "not the stick's\n"
