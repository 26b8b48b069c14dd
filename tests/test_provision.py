"""Provisioning on the box: `kiosk provision` from a folder standing in for the stick.

The packs are made once per module by `kiosk pack` + `kiosk sign` (the
fixtures of `test_packs`), and installed into a fresh state folder per test;
the box trusts a config folder holding the museum's public key only.  Every
refusal is checked against a byte-for-byte snapshot of the active voice, and
a crash test kills real provisioning runs with SIGKILL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile
import test_packs
from fork_server import ForkServer
from test_packs import CONSENT, pack_args

from appliance.cli import main
from engines.voice import Voice
from engines.voice_folder import file_sha256, read_config
from engines.wav_io import read_wav
from provisioning.pack_format import MANIFEST, SIGNATURE, parse_manifest
from provisioning.provision import Provisioner, box_trust
from provisioning.signing import load_private_key, sign_bytes
from provisioning.state import ACTIVE, PACK_DIR, VOICE_DIR, State

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The module-scoped fixtures of test_packs: tiny helper models, keys, the signed v1 pack.
kit, keys, made = test_packs.kit, test_packs.keys, test_packs.made

VOICE = "chen-ama"
#: Health check length in the tests: a few tokens are enough to prove the voice speaks.
TOKENS = 6


def _pack(kit: dict, keys: dict, out: Path, **changes: str | None) -> Path:
    assert main(pack_args(kit, out, **changes)) == 0
    version = changes.get("version", "1")
    pack = out / f"{VOICE}-{version}.kvp"
    # signed as `kiosk sign` signs (which refuses a consent that has ended already)
    data = (pack / MANIFEST).read_bytes()
    (pack / SIGNATURE).write_bytes(sign_bytes(load_private_key(keys["key"]), data))
    return pack


@pytest.fixture(scope="module")
def packs(kit, keys, made) -> dict[str, Path]:
    """v1 (test_packs' pack), v2, a v1 with other content, and a v4 whose consent has ended."""
    root = kit["root"] / "provision-packs"
    expired = kit["inputs"] / "consent-expired.toml"
    expired.write_text(
        CONSENT.replace("date = 2026-03-14", "date = 2020-01-01").replace(
            "valid_until = 2099-12-31", "valid_until = 2020-12-31"
        ),
        encoding="utf-8",
    )
    return {
        "v1": made["pack"],
        "v2": _pack(kit, keys, root / "v2", version="2"),
        "v1-other": _pack(kit, keys, root / "other", ref_text="参考音频里说的话。"),
        "expired": _pack(kit, keys, root / "expired", version="4", consent=str(expired)),
    }


@pytest.fixture(scope="module")
def config(kit, keys) -> Path:
    folder = kit["root"] / "box-config"
    (folder / "trusted-keys").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keys["pub"], folder / "trusted-keys" / "museum.pub")
    return folder


def stick(tmp_path: Path, *packs: Path, name: str = "stick") -> Path:
    """A folder standing in for a stick's mount point, holding copies of the packs."""
    folder = tmp_path / name
    folder.mkdir()
    for pack in packs:
        shutil.copytree(pack, folder / pack.name)
    return folder


def provision(source: Path, state: Path, config: Path, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["provision", str(source), "--state", str(state), "--config-dir", str(config),
                 "--max-tokens", str(TOKENS), *extra])  # fmt: skip
    return code, capsys.readouterr().out


def snapshot(root: Path) -> dict[str, str]:
    """Every file and link under `root`: SHA-256 of files, targets of links."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = file_sha256(path)
    return out


def voices(state: Path, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["voices", "--json", "--state", str(state)]) == 0
    return json.loads(capsys.readouterr().out)


def say(state: Path, out: Path, capsys, *what: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["say", "--voice", VOICE, *what, "--state", str(state), "--max-tokens", "8",
                 "--backend", "torch-eager", "-o", str(out)])  # fmt: skip
    return code, capsys.readouterr().err


def voice_is_whole(state: Path) -> int:
    """The active version's pack and voice folder agree with their own hashes; its version."""
    version_dir = (state / "voices" / VOICE / ACTIVE).resolve(strict=True)
    pack = version_dir / PACK_DIR
    manifest = parse_manifest((pack / MANIFEST).read_bytes())
    for entry in manifest.files:
        assert file_sha256(pack / entry.path) == entry.sha256, entry.path
    folder = version_dir / VOICE_DIR
    config = read_config(folder)
    assert file_sha256(folder / "gpt.ckpt") == config.gpt_sha256
    assert file_sha256(folder / "sovits.pth") == config.sovits_sha256
    assert file_sha256(folder / "prompt.npz") == config.prompt_sha256
    assert config.version == manifest.version
    return manifest.version


# --- end to end ----------------------------------------------------------------------------


def test_provision_say_upgrade_rollback_revoke(packs, config, keys, tmp_path, capsys) -> None:
    state = tmp_path / "state"
    start = time.perf_counter()
    code, out = provision(stick(tmp_path, packs["v1"], name="s1"), state, config, capsys)
    took = time.perf_counter() - start
    assert code == 0, out
    assert f"activated {VOICE} v1" in out
    print(f"provision of the test voice: {took:.1f} s")
    report = json.loads((state / "reports" / "kiosk-report.json").read_text())
    [item] = report["items"]
    assert (item["status"], item["voice"], item["version"], item["kind"]) == (
        "activated", VOICE, 1, "voice")  # fmt: skip
    assert item["source"] == f"{VOICE}-1.kvp" and item["seconds"] > 0
    assert len(list((state / "reports").glob("*-kiosk-report.json"))) == 1
    assert "activated chen-ama v1" in (state / "reports" / "kiosk-report.txt").read_text()
    assert json.loads((state / "voices.changed").read_text())["counter"] == 1
    assert not any((state / "staging").iterdir())

    [listed] = voices(state, capsys)
    assert (listed["id"], listed["version"], listed["text_policy"], listed["kept"]) == (
        VOICE, 1, "curated", [])  # fmt: skip
    pack_manifest = (packs["v1"] / MANIFEST).read_bytes()
    assert listed["manifest_sha256"] == hashlib.sha256(pack_manifest).hexdigest()
    assert Path(listed["path"]).is_dir() and listed["engines"] == []
    assert voice_is_whole(state) == 1
    # every phrase and archival recording cached, loudness-normalised (measured here on its own)
    index = json.loads((state / "voices" / VOICE / "1" / "phrases" / "index.json").read_text())
    assert sorted(i["id"] for i in index["items"] if i["kind"] == "synthetic") == [
        "hello-en", "song", "welcome"]  # fmt: skip
    for entry in index["items"]:
        audio, rate = soundfile.read(state / "voices" / VOICE / "1" / "phrases" / entry["file"])
        looped = np.tile(audio, max(1, int(np.ceil(3 * rate / audio.size))))  # >= 3 s to measure
        lufs = pyloudnorm.Meter(rate).integrated_loudness(looped)
        assert abs(lufs - index["target_lufs"]) <= 1.0, (entry["file"], lufs)

    code, err = say(state, tmp_path / "welcome.wav", capsys, "--phrase", "welcome")
    assert code == 0, err
    samples, rate = read_wav(tmp_path / "welcome.wav")
    assert rate == 32000 and samples.size > 0 and np.isfinite(samples).all()
    assert np.abs(samples).max() > 1e-3
    assert "This voice is generated by AI." in err  # the disclosure, whenever it plays
    code, err = say(state, tmp_path / "x.wav", capsys, "--phrase", "nope")
    assert code == 2 and "no phrase 'nope'" in err and "welcome" in err

    # the same stick again: nothing to do
    code, out = provision(stick(tmp_path, packs["v1"], name="s1b"), state, config, capsys)
    assert code == 0 and f"unchanged {VOICE} v1" in out
    first = snapshot(state / "voices" / VOICE / "1")

    # a v2 replaces it, v1 is kept
    code, out = provision(stick(tmp_path, packs["v2"], name="s2"), state, config, capsys)
    assert code == 0 and f"activated {VOICE} v2" in out, out
    [listed] = voices(state, capsys)
    assert (listed["version"], listed["kept"]) == (2, [1])
    assert os.readlink(state / "voices" / VOICE / ACTIVE) == "2"

    # rollback: v1 again, byte for byte
    assert main(["rollback", VOICE, "--state", str(state)]) == 0
    [listed] = voices(state, capsys)
    assert (listed["version"], listed["kept"]) == (1, [2])
    assert snapshot(state / "voices" / VOICE / "1") == first
    assert main(["rollback", VOICE, "--state", str(state)]) == 2  # nothing older
    assert json.loads((state / "voices.changed").read_text())["counter"] == 3

    # a signed revocation removes every version and every file made from them
    s3 = tmp_path / "s3"
    s3.mkdir()
    assert main(["revoke", VOICE, "--reason", "family withdrew consent", "--key",
                 str(keys["key"]), "--out", str(s3 / "revoked.json")]) == 0  # fmt: skip
    code, out = provision(s3, state, config, capsys)
    assert code == 0, out
    assert f"revoked {VOICE} v1" in out and f"revoked {VOICE} v2" in out
    assert not (state / "voices" / VOICE).exists()
    assert not list(state.rglob("*.flac")) and not list(state.rglob("*.wav"))  # no cached file
    assert voices(state, capsys) == []
    statuses = [i["status"] for i in json.loads(
        (state / "reports" / "kiosk-report.json").read_text())["items"]]  # fmt: skip
    assert statuses == ["revoked", "revoked"]
    assert not any((state / "staging").iterdir())
    code, err = say(state, tmp_path / "y.wav", capsys, "--phrase", "welcome")
    assert code == 2 and "no installed voice" in err
    # the box remembers: the revoked pack cannot come back from another stick
    code, out = provision(stick(tmp_path, packs["v2"], name="s4"), state, config, capsys)
    assert code == 1 and "refused:" in out and "revoked on this box" in out


def test_remove_and_the_daemon_hook(packs, config, tmp_path, capsys) -> None:
    state = tmp_path / "state"
    state.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                                "signal.signal(signal.SIGHUP, lambda *a: exit(7))\n"
                                "print('ready', flush=True)\ntime.sleep(60)"],
                               stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert sleeper.stdout is not None and sleeper.stdout.readline() == b"ready\n"
        (state / "kioskd.pid").write_text(f"{sleeper.pid}\n")
        code, out = provision(stick(tmp_path, packs["v1"]), state, config, capsys)
        assert code == 0, out
        assert sleeper.wait(timeout=30) == 7  # the daemon got SIGHUP
    finally:
        sleeper.kill()
    (state / "kioskd.pid").write_text("999999999\n")  # a dead daemon: no error
    assert main(["remove", VOICE, "--state", str(state)]) == 0
    assert not (state / "voices" / VOICE).exists()
    assert json.loads((state / "voices.changed").read_text())["counter"] == 2
    assert main(["remove", VOICE, "--state", str(state)]) == 2


# --- refusals: the active voice stays byte for byte ------------------------------------------


@pytest.fixture
def box(packs, config, tmp_path, capsys) -> Path:
    """A state folder with v1 active."""
    state = tmp_path / "state"
    code, out = provision(stick(tmp_path, packs["v1"], name="first"), state, config, capsys)
    assert code == 0, out
    return state


def _untrusted(pack: Path, keys: dict) -> None:
    data = (pack / MANIFEST).read_bytes()
    (pack / SIGNATURE).write_bytes(sign_bytes(load_private_key(keys["stranger"]), data))


def _modified(pack: Path, keys: dict) -> None:
    with open(pack / "reference.wav", "r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 1]))


def _unsigned(pack: Path, keys: dict) -> None:
    (pack / SIGNATURE).unlink()


@pytest.mark.parametrize(
    ("case", "pack", "change", "expected"),
    [
        ("untrusted key", "v2", _untrusted, "not valid for any trusted key"),
        ("modified file", "v2", _modified, "does not match its SHA-256"),
        ("unsigned pack", "v2", _unsigned, "not signed"),
        ("expired consent", "expired", None, "ended on 2020-12-31"),
    ],
)
def test_refused_packs_leave_the_active_voice_alone(
    case, pack, change, expected, packs, keys, config, box, tmp_path, capsys
) -> None:
    before = snapshot(box / "voices")
    source = packs[pack]
    folder = stick(tmp_path, source)
    if change is not None:
        change(folder / source.name, keys)
    code, out = provision(folder, box, config, capsys)
    assert code == 1, out
    assert "refused:" in out and expected in out, (case, out)
    item = json.loads((box / "reports" / "kiosk-report.json").read_text())["items"][0]
    assert item["status"] == "refused" and expected in item["reason"]
    assert snapshot(box / "voices") == before
    assert not any((box / "staging").iterdir())


def test_downgrade_and_same_version_other_content(packs, config, tmp_path, capsys) -> None:
    state = tmp_path / "state"
    assert provision(stick(tmp_path, packs["v2"], name="v2"), state, config, capsys)[0] == 0
    before = snapshot(state / "voices")
    code, out = provision(stick(tmp_path, packs["v1"], name="v1"), state, config, capsys)
    assert code == 1 and "refused:" in out and "older than the active v2" in out
    assert snapshot(state / "voices") == before
    assert main(["remove", VOICE, "--state", str(state)]) == 0
    assert provision(stick(tmp_path, packs["v1"], name="a"), state, config, capsys)[0] == 0
    before = snapshot(state / "voices")
    code, out = provision(stick(tmp_path, packs["v1-other"], name="b"), state, config, capsys)
    assert code == 1 and "installed already with other content" in out
    assert snapshot(state / "voices") == before
    code, out = provision(stick(tmp_path, packs["v1-other"], name="c"), state, config, capsys,
                          "--allow-downgrade")  # fmt: skip
    assert code == 0 and f"activated {VOICE} v1" in out, out
    [listed] = voices(state, capsys)
    other = hashlib.sha256((packs["v1-other"] / MANIFEST).read_bytes()).hexdigest()
    assert listed["manifest_sha256"] == other and listed["kept"] == [1]


def test_an_unsigned_revocation_list_counts_for_nothing(box, keys, config, tmp_path, capsys):
    before = snapshot(box / "voices")
    source = tmp_path / "lists"
    source.mkdir()
    assert main(["revoke", VOICE, "--reason", "x", "--key", str(keys["key"]),
                 "--out", str(source / "revoked.json")]) == 0  # fmt: skip
    (source / "revoked.json.sig").unlink()
    code, out = provision(source, box, config, capsys)
    assert code == 1 and "refused:" in out and "not signed" in out
    (source / "revoked.json.sig").write_bytes(
        sign_bytes(load_private_key(keys["stranger"]), (source / "revoked.json").read_bytes())
    )
    code, out = provision(source, box, config, capsys)
    assert code == 1 and "not valid for any trusted key" in out
    assert snapshot(box / "voices") == before


def test_text_policy_and_expired_consent_on_say(packs, keys, config, box, tmp_path, capsys):
    code, err = say(box, tmp_path / "t.wav", capsys, "--text", "你好。")
    assert code == 2 and "curated" in err and "--phrase" in err
    assert not (tmp_path / "t.wav").exists()
    # a voice installed while its consent was valid goes silent once it has ended
    folder = stick(tmp_path, packs["expired"], name="old")
    state = State(box)
    items = Provisioner(state, box_trust(config), today=dt.date(2020, 6, 1),
                        health_tokens=TOKENS, precache_tokens=TOKENS,
                        progress=lambda _l: None).run(folder)  # fmt: skip
    assert [i.status for i in items] == ["activated"], items
    code, err = say(box, tmp_path / "e.wav", capsys, "--phrase", "welcome")
    assert code == 2 and "disabled" in err and "2020-12-31" in err
    [listed] = voices(box, capsys)
    assert listed["version"] == 4 and listed["enabled"] is False
    # rolling back to v1 (consent valid) speaks again
    assert main(["rollback", VOICE, "--state", str(box)]) == 0
    code, err = say(box, tmp_path / "ok.wav", capsys, "--phrase", "welcome")
    assert code == 0, err


def test_a_folder_voice_and_official_files_still_need_text(tmp_path, capsys) -> None:
    assert main(["say", "--voice-folder", str(tmp_path), "-o", str(tmp_path / "a.wav")]) == 2
    assert "--text" in capsys.readouterr().err


# --- crash test ------------------------------------------------------------------------------

SERVER = r"""
import os, sys
import torch
torch.set_num_threads(1)
from provisioning.provision import Provisioner, box_trust, write_reports
from provisioning.state import State
state, config = State(sys.argv[1]), sys.argv[2]
trust = box_trust(__import__("pathlib").Path(config))
print("ready", flush=True)
for line in sys.stdin:
    source, allow = line.split()
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        items = Provisioner(state, trust, allow_downgrade=allow == "1", health_tokens=%d,
                            precache_tokens=%d, progress=lambda _l: None
                            ).run(__import__("pathlib").Path(source))
        write_reports(state, items)
        os._exit(0 if all(i.status == "activated" for i in items) else 3)
    print(pid, flush=True)
    sys.stdin.readline()  # "reap": the pid stays ours (a zombie) until the test has killed it
    _, status = os.waitpid(pid, 0)
    print(status, flush=True)
""".replace("%d", str(TOKENS))


def test_provisioning_killed_at_random_moments(packs, config, tmp_path) -> None:
    """SIGKILL at random points of runs switching between v1 and v2: the active voice is
    always whole (one version, never a mix), and the next run cleans up and succeeds."""
    root = tmp_path / "state"
    s1, s2 = stick(tmp_path, packs["v1"], name="s1"), stick(tmp_path, packs["v2"], name="s2")
    server = ForkServer(SERVER, str(root), str(config))

    def run(source: Path, delay: float | None) -> int:
        return server.run(f"{source} 1", delay)

    state = State(root)
    try:
        start = time.perf_counter()
        assert run(s1, None) == 0
        full = time.perf_counter() - start
        assert voice_is_whole(root) == 1
        # Kill moments spread evenly over 1.1 runs' time (activation comes at the end of a
        # run, so some kills land just before or after it), in random order, and five runs
        # left to finish, so versions do switch: an open-ended uniform draw made the kill
        # count a gamble.
        rng = random.Random(9)
        delays: list[float | None] = [full * 1.1 * (k + 0.5) / 45 for k in range(45)]
        delays += [None] * 5
        rng.shuffle(delays)
        outcomes = {"killed": 0, "finished": 0, "old": 0, "new": 0}
        for i, delay in enumerate(delays):
            old = voice_is_whole(root)
            for item in state.installed(VOICE):  # no kept copy: every run copies and builds
                if item.version != old:
                    state.discard(item.folder)
            status = run(s2 if old == 1 else s1, delay)
            outcomes["killed" if os.WIFSIGNALED(status) else "finished"] += 1
            now = voice_is_whole(root)
            assert now in (1, 2)
            outcomes["old" if now == old else "new"] += 1
            if i % 10 == 9:
                with Voice.load(root / "voices" / VOICE / ACTIVE / VOICE_DIR,
                                backend="torch-eager") as voice:  # fmt: skip
                    assert voice.voice_id == VOICE
        # the next run recovers: staging emptied, temp links gone, the other version active
        old = voice_is_whole(root)
        assert run(s2 if old == 1 else s1, None) == 0
        assert voice_is_whole(root) != old
        assert not any(state.staging.iterdir())
        assert not [p for p in (root / "voices" / VOICE).iterdir() if p.name.startswith(".")]
        print(f"crash test: one run {full:.1f} s; {outcomes}")
        assert outcomes["killed"] >= 20 and outcomes["new"] >= 5 and outcomes["old"] >= 1
    finally:
        server.close()
