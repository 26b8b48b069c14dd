"""The box's systemd side: every unit verified, the daemon's promises, users, folders, install.

Real tools only: `systemd-analyze verify` (through `devtools.unit_lint`, in a
throw-away root with stand-ins for the programs the units run),
`systemd-sysusers` and `systemd-tmpfiles --create` into a throw-away root,
`make install DESTDIR=...`, and the browser session script run with stand-in
programs for Xorg and Chromium (neither a display nor a GPU is needed).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.unit_lint import UnitLintError, unit_directives, values, verify_units

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "systemd"
UNIT_SUFFIXES = (".service", ".path", ".target", ".socket", ".timer", ".mount")
DAEMON = SYSTEMD / "kioskd.service"
BROWSER = SYSTEMD / "kiosk-browser.service"
SESSION = SYSTEMD / "kiosk-browser-session"


def unit_files() -> list[Path]:
    return sorted(p for p in SYSTEMD.iterdir() if p.suffix in UNIT_SUFFIXES)


def unit_name(path: Path) -> str:
    """What to verify: a template as one instance (`kiosk-import@sdb1.service`)."""
    stem, suffix = path.name.rsplit(".", 1)
    return f"{stem}sdb1.{suffix}" if stem.endswith("@") else path.name


def seconds(span: str) -> float:
    """A systemd time span, as systemd reads it (`systemd-analyze timespan`)."""
    done = subprocess.run(
        ["systemd-analyze", "timespan", span], capture_output=True, text=True, check=True
    )
    micros = re.search(r"μs:\s*(\d+)", done.stdout)
    assert micros, done.stdout
    return int(micros.group(1)) / 1e6


def environment(path: Path) -> dict[str, str]:
    env = {}
    for line in values(path, "Service", "Environment"):
        for item in line.split():
            key, _, value = item.partition("=")
            env[key] = value
    return env


# --- systemd-analyze verify --------------------------------------------------------------


def test_every_unit_verifies_clean() -> None:
    units = unit_files()
    names = {p.name for p in units}
    assert {"kioskd.service", "kiosk-browser.service", "kiosk.target"} <= names
    # All at once, so what one unit wants (kiosk.target → kioskd.service) resolves.
    verify_units(units, [unit_name(p) for p in units])


@pytest.mark.parametrize(
    ("unit", "line", "replacement"),
    [
        (DAEMON, "Type=notify", "Type=notfy"),  # a value systemd cannot parse
        (DAEMON, "WatchdogSec=30s", "WatchdogSec=thirty"),
        (DAEMON, "NotifyAccess=main", "NotifyAcess=main"),  # a misspelt key
        (BROWSER, "[Service]", "[Servce]"),  # a misspelt section
        (BROWSER, "Restart=on-failure", "Restart=sometimes"),
    ],
)
def test_verify_reports_a_broken_copy(unit: Path, line: str, replacement: str, tmp_path) -> None:
    text = unit.read_text(encoding="utf-8")
    assert text.count(line + "\n") == 1, f"{unit.name} has no line {line!r} to break"
    broken = tmp_path / unit.name
    broken.write_text(text.replace(line + "\n", replacement + "\n"), encoding="utf-8")
    with pytest.raises(UnitLintError):
        verify_units([broken])


# --- what the units promise ----------------------------------------------------------------


def test_daemon_unit_has_what_the_box_relies_on() -> None:
    service = dict(unit_directives(DAEMON)["Service"])
    unit = dict(unit_directives(DAEMON)["Unit"])
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["Restart"] == "always"
    assert unit["StartLimitAction"] == "reboot"
    assert int(unit["StartLimitBurst"]) >= 3
    assert seconds(unit["StartLimitIntervalSec"]) >= 60
    assert 10 <= seconds(service["WatchdogSec"]) <= 120
    assert seconds(service["TimeoutStartSec"]) >= 10 * 60  # a first TensorRT build
    assert 5 < seconds(service["TimeoutStopSec"]) <= 10  # the player stops within 5 s
    assert service["User"] == "kiosk"
    groups = " ".join(values(DAEMON, "Service", "SupplementaryGroups")).split()
    assert set(groups) >= {"audio", "video", "render", "gpio", "input"}
    assert service["ProtectSystem"] == "strict"
    for key in ("StateDirectory", "CacheDirectory", "LogsDirectory"):
        assert service[key] == "kiosk", key
    assert service["ExecStart"].split()[0].endswith("/kioskd")


def test_daemon_unit_keeps_devices_and_jit() -> None:
    """No PrivateDevices= (hides /dev/snd, the GPU, GPIO, input), no
    MemoryDenyWriteExecute= (CUDA, TensorRT, ONNX Runtime write code), set to anything;
    and nothing that makes the device policy an allow-list: DeviceAllow=/DevicePolicy=,
    or ProtectClock= (it implies DeviceAllow=char-rtc before systemd 253)."""
    keys = {key for items in unit_directives(DAEMON).values() for key, _ in items}
    assert "PrivateDevices" not in keys
    assert "MemoryDenyWriteExecute" not in keys
    assert not keys & {"DevicePolicy", "DeviceAllow", "ProtectClock"}


def test_daemon_environment_caches_under_the_cache_directory() -> None:
    env = environment(DAEMON)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    cache = "/var/cache/" + dict(unit_directives(DAEMON)["Service"])["CacheDirectory"]
    for key in ("TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME", "CUDA_CACHE_PATH"):
        assert env[key] == cache or env[key].startswith(cache + "/"), key
    assert env["HF_HUB_OFFLINE"] == "1"  # nothing is downloaded at run time


def test_browser_unit_runs_the_session_as_its_own_user() -> None:
    service = dict(unit_directives(BROWSER)["Service"])
    assert service["User"] == "kiosk-ui" != dict(unit_directives(DAEMON)["Service"])["User"]
    assert service["Restart"] == "on-failure"
    assert service["ExecStart"] == "/usr/lib/kiosk/" + SESSION.name
    assert service["PAMName"] and service["TTYPath"].startswith("/dev/tty")
    assert "127.0.0.1:8080" in environment(BROWSER)["KIOSK_URL"]
    assert os.access(SESSION, os.X_OK)


def exposure(unit: Path, tmp_path: Path) -> float:
    """`systemd-analyze security --offline` of `unit` (0 best, 10 worst), in a throw-away
    root with this machine's units and a stand-in for its program."""
    root = tmp_path / "security-root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(unit, root / "etc/systemd/system" / DAEMON.name)
    program = root / values(unit, "Service", "ExecStart")[0].split()[0].lstrip("/")
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    done = _run("systemd-analyze", "security", "--offline=yes", f"--root={root}", DAEMON.name)
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert level, done.stdout + done.stderr
    return float(level.group(1))


def test_daemon_sandbox_keeps_its_exposure_low(tmp_path) -> None:
    """The sandbox as systemd scores it; the same unit without it scores far worse."""
    assert exposure(DAEMON, tmp_path / "as-is") <= 3.0
    bare = tmp_path / DAEMON.name
    sandbox = ("Protect", "Private", "Restrict", "NoNewPrivileges", "Capability", "SystemCall",
               "LockPersonality", "RemoveIPC")  # fmt: skip
    bare.write_text(
        "".join(
            line
            for line in DAEMON.read_text().splitlines(keepends=True)
            if not line.startswith(sandbox)
        )
    )
    assert exposure(bare, tmp_path / "bare") >= 8.0


# --- users and folders, made for real in a throw-away root ---------------------------------


def _root_with(tmp_path: Path, tmpfiles: str | None = None) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    sysusers = root / "usr/lib/sysusers.d"
    sysusers.mkdir(parents=True)
    shutil.copy(SYSTEMD / "sysusers.d/kiosk.conf", sysusers)
    folders = root / "usr/lib/tmpfiles.d"
    folders.mkdir(parents=True)
    conf = folders / "kiosk.conf"
    shutil.copy(SYSTEMD / "tmpfiles.d/kiosk.conf", conf)
    if tmpfiles is not None:
        conf.write_text(tmpfiles, encoding="utf-8")
    return root


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _accounts(path: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines()}


def test_sysusers_and_tmpfiles_make_the_users_and_folders(tmp_path) -> None:
    root = _root_with(tmp_path)
    done = _run("systemd-sysusers", f"--root={root}")
    assert done.returncode == 0, done.stderr
    users = _accounts(root / "etc/passwd")
    groups = _accounts(root / "etc/group")
    # Every user and group a unit names exists once sysusers ran.
    for unit in unit_files():
        for key in ("User", "Group"):
            for name in values(unit, "Service", key):
                assert name in (users if key == "User" else groups), f"{unit.name}: {name}"
        for line in values(unit, "Service", "SupplementaryGroups"):
            for group in line.split():
                members = groups[group][3].split(",")
                user = values(unit, "Service", "User")[0]
                assert user in members, f"{unit.name}: {user} is not in {group}"
    assert users["kiosk"][5] == "/var/lib/kiosk"
    assert users["kiosk"][6].endswith("nologin")

    done = _run("systemd-tmpfiles", "--create", f"--root={root}")
    assert done.returncode == 0, done.stderr
    uid = int(users["kiosk"][2])
    for folder in ("var/lib/kiosk", "var/cache/kiosk", "var/log/kiosk"):
        info = (root / folder).stat()
        assert (info.st_uid, info.st_mode & 0o777) == (uid, 0o750), folder
    assert (root / "etc/kiosk/trusted-keys").stat().st_uid == 0
    # The daemon's StateDirectory= etc. name the folders tmpfiles makes.
    service = dict(unit_directives(DAEMON)["Service"])
    assert (root / "var/lib" / service["StateDirectory"]).is_dir()
    assert (root / "var/cache" / service["CacheDirectory"]).is_dir()


def test_tmpfiles_refuses_a_folder_for_an_unknown_user(tmp_path) -> None:
    root = _root_with(tmp_path, tmpfiles="d /var/lib/kiosk 0750 kiosk-typo kiosk -\n")
    assert _run("systemd-sysusers", f"--root={root}").returncode == 0
    done = _run("systemd-tmpfiles", "--create", f"--root={root}")
    assert done.returncode != 0
    assert "kiosk-typo" in done.stderr


# --- make install ------------------------------------------------------------------------


def test_make_install_stages_a_tree_that_verifies(tmp_path) -> None:
    dest = tmp_path / "dest"
    argv = ["make", "-s", "install", f"DESTDIR={dest}", "INSTALL_PYTHON=no"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    units = dest / "usr/lib/systemd/system"
    assert sorted(p.name for p in units.iterdir()) == sorted(p.name for p in unit_files())
    session = dest / "usr/lib/kiosk" / SESSION.name
    assert os.access(session, os.X_OK)
    assert (dest / "usr/lib/sysusers.d/kiosk.conf").is_file()
    assert (dest / "usr/lib/tmpfiles.d/kiosk.conf").is_file()
    config = dest / "etc/kiosk/kiosk.toml"
    assert config.read_bytes() == (REPO / "appliance/kiosk.example.toml").read_bytes()
    assert (dest / "etc/kiosk/trusted-keys").is_dir()
    verify_units(sorted(units.iterdir()), [unit_name(p) for p in sorted(units.iterdir())])

    # Installing again keeps the technician's config; other folders move the paths.
    config.write_text('state_dir = "/srv/kiosk"\n')
    argv += ["BINDIR=/usr/local/bin", "LIBDIR=/usr/local/lib/kiosk"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert config.read_text() == 'state_dir = "/srv/kiosk"\n'
    daemon = units / DAEMON.name
    assert values(daemon, "Service", "ExecStart")[0].startswith("/usr/local/bin/kioskd ")
    assert values(units / BROWSER.name, "Service", "ExecStart") == [
        "/usr/local/lib/kiosk/" + SESSION.name
    ]


# --- the browser session, with stand-ins for Xorg and Chromium ------------------------------

FAKE_X = """\
#!{python}
# Stand-in for Xorg: records its arguments, opens the display's socket, waits.
import signal, socket, sys, time
display = sys.argv[1]
open("{log}/xorg.args", "w").write("\\n".join(sys.argv[1:]))
if "{mode}" == "crash":
    sys.exit(3)
path = "/tmp/.X11-unix/X" + display[1:]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen()
def bye(*_):
    import os
    os.unlink(path)
    open("{log}/xorg.stopped", "w").write("yes")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
while True:
    time.sleep(0.05)
"""

FAKE_BROWSER = """\
#!/bin/sh
# Stand-in for Chromium: records its arguments and display, then lives or ends.
printf '%s\\n' "$@" > {log}/browser.args
echo "$DISPLAY" > {log}/browser.display
trap 'echo yes > {log}/browser.stopped; exit 0' TERM
if [ "{mode}" = "exit" ]; then sleep 0.3; exit 0; fi
while :; do sleep 0.05; done
"""


def _session(tmp_path: Path, mode: str, port: int) -> tuple[subprocess.Popen, Path, str]:
    log = tmp_path / "log"
    log.mkdir()
    display = f":{os.getpid() % 500 + 7000}"
    fake_x = tmp_path / "Xorg"
    fake_x.write_text(FAKE_X.format(python=sys.executable, log=log, mode=mode))
    fake_browser = tmp_path / "chromium"
    fake_browser.write_text(FAKE_BROWSER.format(log=log, mode=mode))
    for program in (fake_x, fake_browser):
        program.chmod(0o755)
    Path("/tmp/.X11-unix").mkdir(mode=0o1777, exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "KIOSK_XORG": str(fake_x),
        "KIOSK_BROWSER": str(fake_browser),
        "KIOSK_DISPLAY": display,
        "KIOSK_URL": f"http://127.0.0.1:{port}/",
        "KIOSK_WAIT_SECONDS": "20",
        "RUNTIME_DIRECTORY": str(tmp_path / "run"),
    }
    process = subprocess.Popen(
        [str(SESSION)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return process, log, display


def _wait_for(path: Path, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.05)


@pytest.fixture
def daemon_port():
    """A listening socket standing in for kioskd's HTTP port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def test_browser_session_starts_chromium_on_the_page_and_restarts_when_it_ends(
    tmp_path, daemon_port
) -> None:
    process, log, display = _session(tmp_path, "exit", daemon_port)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 1, out  # non-zero: Restart=on-failure brings both back
    assert (log / "xorg.stopped").exists(), out  # Xorg is stopped with the browser
    xorg = (log / "xorg.args").read_text().split("\n")
    assert xorg[:2] == [display, "vt1"]
    assert {"-nolisten", "tcp", "-nocursor", "-novtswitch", "-keeptty"} <= set(xorg)
    flags = (log / "browser.args").read_text().split()
    assert (log / "browser.display").read_text().strip() == display
    assert "--kiosk" in flags
    assert f"--app=http://127.0.0.1:{daemon_port}/" in flags
    for flag in ("--no-first-run", "--disable-pinch", "--overscroll-history-navigation=0"):
        assert flag in flags
    features = next(f for f in flags if f.startswith("--disable-features="))
    assert "Translate" in features.split("=", 1)[1].split(",")
    profile = next(f for f in flags if f.startswith("--user-data-dir="))
    assert profile == f"--user-data-dir={tmp_path / 'run' / 'chromium'}"


def test_browser_session_stops_both_on_sigterm(tmp_path, daemon_port) -> None:
    process, log, _display = _session(tmp_path, "live", daemon_port)
    _wait_for(log / "browser.args")
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=15)
    assert process.returncode == 0, out  # a stop is not a failure: no restart
    _wait_for(log / "xorg.stopped", 5)
    _wait_for(log / "browser.stopped", 5)


def test_browser_session_fails_clearly_when_xorg_cannot_start(tmp_path, daemon_port) -> None:
    process, log, _display = _session(tmp_path, "crash", daemon_port)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "Xorg ended while starting" in out and "journalctl -u kiosk-browser" in out
    assert not (log / "browser.args").exists()


def test_session_script_is_valid_bash() -> None:
    done = _run("bash", "-n", str(SESSION))
    assert done.returncode == 0, done.stderr
    assert SESSION.read_text().startswith("#!/bin/bash\n")  # /dev/tcp and wait -n
