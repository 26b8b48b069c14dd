"""The build step's phrase cache: loudness meter and normaliser, precache, crash safety."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import pytest
import soundfile
import torch
from fork_server import ForkServer
from kiosk_build import loudness, provenance
from kiosk_build import precache as precache_mod
from kiosk_build.precache import INDEX_FILE

from appliance.cli import main
from appliance.phrase_cache import read_index
from devtools import sample_packs
from engines.voice import Voice
from engines.voice_folder import load_prompt, read_config
from provisioning.provision import Provisioner, box_trust
from provisioning.state import State

SR = 32_000


def faded_tone(freq: float, seconds: float, sr: int, amp: float, phase: float = 0.0) -> np.ndarray:
    """A sine with 20 ms raised-cosine fades (no onset click to overshoot)."""
    n = np.arange(int(seconds * sr))
    x = amp * np.sin(2 * np.pi * freq * n / sr + phase)
    fade = int(0.02 * sr)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
    x[:fade] *= ramp
    x[-fade:] *= ramp[::-1]
    return x


def speechlike(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Syllable-rate bursts of a voiced tone plus noise, with a few sharp peaks."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    voiced = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12))
    x = 0.08 * env * voiced + 0.01 * rng.standard_normal(t.size)
    for i in rng.integers(0, t.size, 5):
        x[i] += 0.7
    return x


def test_reference_tone_reads_minus_3_lufs_and_0_dbtp() -> None:
    """BS.1770's anchor: a 0 dBFS 1 kHz sine at 48 kHz reads -3.01 LUFS, 0 dBTP."""
    got = loudness.measure(faded_tone(1000, 5, 48_000, 1.0), 48_000)
    assert got.lufs == pytest.approx(-3.01, abs=0.1)
    assert got.true_peak_dbtp == pytest.approx(0.0, abs=0.01)


def test_true_peak_sees_the_peak_between_samples() -> None:
    """fs/4 at 45 degrees: every sample is at 0.707 (-3 dBFS) but the wave peaks at 1.0."""
    x = faded_tone(12_000, 1, 48_000, 1.0, phase=np.pi / 4)
    assert 20 * math.log10(np.abs(x).max()) == pytest.approx(-3.01, abs=0.01)
    assert loudness.measure(x, 48_000).true_peak_dbtp == pytest.approx(0.0, abs=0.05)
    assert loudness.oversampling_factor(48_000) == 4
    assert loudness.oversampling_factor(32_000) == 6


def test_short_clip_is_measured_looped() -> None:
    """A clip under one 400 ms block reads what a long clip of the same sound reads."""
    long = loudness.measure(np.sin(2 * np.pi * 500 * np.arange(2 * SR) / SR) * 0.3, SR)
    short = loudness.measure(np.sin(2 * np.pi * 500 * np.arange(SR // 5) / SR) * 0.3, SR)
    assert short.lufs == pytest.approx(long.lufs, abs=0.1)
    y, after = loudness.normalise(np.sin(2 * np.pi * 500 * np.arange(SR // 10) / SR) * 0.01, SR)
    assert after.lufs == pytest.approx(-18.0, abs=0.1)
    assert y.shape == (SR // 10,)


@pytest.mark.parametrize("target", [-18.0, -23.0, -14.0])
def test_normalise_reaches_target_under_the_ceiling(target: float) -> None:
    """Speech-like input with sharp peaks: limited, within ±1 LU, at or under -1 dBTP."""
    x = speechlike(3.0, SR)
    before = loudness.measure(x, SR)
    assert before.true_peak_dbtp - before.lufs > 18  # peaky: gain alone would clip
    y, after = loudness.normalise(x, SR, target_lufs=target)
    assert y.dtype == np.float32
    assert abs(after.lufs - target) <= 1.0
    assert after.lufs == pytest.approx(target, abs=0.1)
    assert after.true_peak_dbtp <= -1.0
    # What it reports is what the samples measure.
    assert loudness.measure(y, SR) == after


def test_normalise_stereo_and_int_input() -> None:
    """(n, 2) float and int16 clips are measured and normalised alike."""
    mono = speechlike(2.0, SR, seed=1)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    y, after = loudness.normalise(stereo, SR)
    assert y.shape == stereo.shape
    assert abs(after.lufs + 18) <= 1.0 and after.true_peak_dbtp <= -1.0
    as_int = (np.clip(mono, -1, 1) * 32767).astype(np.int16)
    assert loudness.measure(as_int, SR).lufs == pytest.approx(
        loudness.measure(as_int / 32767.0, SR).lufs, abs=0.01
    )


def test_ceiling_wins_over_target() -> None:
    """A click train cannot reach -5 LUFS under -1 dBTP: it comes back quieter, truthfully."""
    x = np.zeros(SR * 2)
    x[:: SR // 10] = 0.5
    y, after = loudness.normalise(x, SR, target_lufs=-5.0)
    assert after.true_peak_dbtp <= -1.0
    assert after == loudness.measure(y, SR)
    assert after.lufs < -5.0


@pytest.mark.parametrize(
    ("clip", "message"),
    [
        (np.zeros(SR), "silent"),
        (np.zeros(0), "empty"),
        (np.array([0.1, np.nan] * 8000), "NaN"),
    ],
)
def test_unmeasurable_clips_are_refused(clip: np.ndarray, message: str) -> None:
    """Silence, an empty clip, NaN: a clear LoudnessError (a ValueError)."""
    with pytest.raises(loudness.LoudnessError, match=message):
        loudness.normalise(clip, SR)


# --- precache on a provisioned box ------------------------------------------------------------

VOICE = sample_packs.VOICE_ID
TARGET = -18.0
#: Semantic tokens per segment: the kit's untrained GPT never says EOS.
TOKENS = 6


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The kit's voice provisioned for real (precache in staging, then the health check)."""
    root = tmp_path_factory.mktemp("precache")
    kit = sample_packs.write_kit(root / "kit")
    keys = sample_packs.make_keys(root / "keys")
    pack = sample_packs.build_pack(kit, keys, root / "packs")
    config = sample_packs.box_config_dir(root / "config", keys)
    stick = root / "stick"
    shutil.copytree(pack, stick / pack.name)
    state = State(root / "state")
    torch.set_num_threads(1)
    start = time.perf_counter()
    items = Provisioner(state, box_trust(config), health_tokens=TOKENS, precache_tokens=TOKENS,
                        progress=lambda _line: None).run(stick)  # fmt: skip
    seconds = time.perf_counter() - start
    assert [i.status for i in items] == ["activated"], items
    return {"state": state.root, "items": items, "seconds": seconds, "config": config}


def copy_state(box: dict[str, Any], tmp_path: Path) -> Path:
    target = tmp_path / "state"
    shutil.copytree(box["state"], target, symlinks=True)
    return target


def phrase_files(phrases: Path) -> dict[str, int]:
    """Every file under phrases/ with its mtime (ns)."""
    return {str(p.relative_to(phrases)): p.stat().st_mtime_ns
            for p in sorted(phrases.rglob("*")) if p.is_file()}  # fmt: skip


def build(state: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["build", VOICE, "--state", str(state), "--backend", "torch-eager",
                 "--max-tokens", str(TOKENS), *extra])  # fmt: skip
    return code, capsys.readouterr().out


def test_provisioning_caches_levelled_marked_phrases(box, capsys) -> None:
    state = State(box["state"])
    active = state.active(VOICE)
    assert active is not None and active.manifest.voice is not None
    details = active.manifest.voice
    print(f"provision with precache: {box['seconds']:.1f} s")
    assert "phrases: 5 cached (5 made) at -18 LUFS" in box["items"][0].reason
    index = json.loads((active.phrases / INDEX_FILE).read_text())
    assert (index["format"], index["voice"], index["version"], index["target_lufs"]) == (
        "kiosk-phrases/1", VOICE, 1, TARGET)  # fmt: skip
    parsed = read_index(active.phrases)  # the daemon's reader takes it as it is
    assert [(i.kind, i.id) for i in parsed.items] == [
        ("synthetic", p.id) for p in details.phrases
    ] + [("archival", Path(a.path).stem) for a in details.archival]
    anchors = provenance.box_trust_anchors(state.root / "provenance")
    for item in index["items"]:
        path = active.phrases / item["file"]
        assert precache_mod.file_sha256(path) == item["sha256"]
        samples, rate = soundfile.read(str(path), dtype="float64")
        assert rate == item["sample_rate"] and samples.shape[0] / rate == pytest.approx(
            item["seconds"], abs=1e-3
        )
        # loudness measured here, independently of what the index says
        lufs = pyloudnorm.Meter(rate).integrated_loudness(samples)
        assert abs(lufs - TARGET) <= 1.0, (item["id"], lufs)
        assert lufs == pytest.approx(item["lufs"], abs=0.02)
        assert loudness.true_peak_dbtp(samples, rate) <= -1.0
        meta = precache_mod.read_metadata(path)
        record = meta["record"]
        assert (record["voice_id"], record["voice_version"], record["item_id"]) == (
            VOICE, 1, item["id"])  # fmt: skip
        mark = provenance.read_provenance(path, anchors)
        assert mark["validation_state"] == "Trusted", mark["failures"]
        assert mark["consent_document_sha256"] == details.consent.document_sha256
        assert mark["pack_manifest_sha256"] == active.manifest_sha256
        if item["kind"] == "synthetic":
            phrase = next(p for p in details.phrases if p.id == item["id"])
            assert meta["tag"] == record["tag"] == mark["kind"] == "AI-generated"
            assert meta["title"] == record["text"] == phrase.text
            assert mark["digital_source_type"] == provenance.TRAINED_ALGORITHMIC_MEDIA
            assert record["settings"]["max_new_tokens"] == TOKENS
            assert record["settings"]["language"] == phrase.lang
            if phrase.seed is not None:
                assert record["settings"]["seed"] == phrase.seed
                assert record["settings"]["speed"] == phrase.speed
        else:
            assert meta["tag"] == record["tag"] == mark["kind"] == "original recording"
            assert mark["digital_source_type"] is None
    capsys.readouterr()
    assert main(["voices", "--json", "--state", str(state.root)]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["cached"] == {
        "phrases": [p.id for p in details.phrases],
        "archival": [Path(a.path).stem for a in details.archival],
        "target_lufs": TARGET,
    }


def test_kiosk_build_rebuilds_nothing_then_only_what_changed(box, tmp_path, capsys) -> None:
    state = copy_state(box, tmp_path)
    phrases = State(state).active(VOICE).phrases  # type: ignore[union-attr]
    before = phrase_files(phrases)
    start = time.perf_counter()
    code, out = build(state, capsys)
    idle = time.perf_counter() - start
    assert code == 0 and "5 cached (0 made)" in out, out
    assert phrase_files(phrases) == before  # not one file (index included) rewritten
    print(f"kiosk build with nothing to do: {idle:.1f} s")

    # a lost file, a damaged one, a killed run's temporary file and an orphan
    index = json.loads((phrases / INDEX_FILE).read_text())
    lost, damaged = index["items"][0], index["items"][3]
    (phrases / lost["file"]).unlink()
    with open(phrases / damaged["file"], "r+b") as handle:
        handle.seek(-100, os.SEEK_END)
        handle.write(b"\0" * 10)
    (phrases / "synthetic" / ".tmp-welcome-x.flac.123.flac").write_bytes(b"half")
    (phrases / "synthetic" / "welcome-000000000000.flac").write_bytes(b"orphan")
    kept = {k: v for k, v in phrase_files(phrases).items()
            if k not in (lost["file"], damaged["file"], INDEX_FILE) and "000000" not in k
            and ".tmp-" not in k}  # fmt: skip
    code, out = build(state, capsys)
    assert code == 0 and "5 cached (2 made)" in out, out
    now = phrase_files(phrases)
    assert {k: now[k] for k in kept} == kept  # the sound files were left alone
    assert precache_mod.verify_index(phrases) == []
    listed = {i["file"] for i in json.loads((phrases / INDEX_FILE).read_text())["items"]}
    assert set(now) == listed | {INDEX_FILE}  # leftovers and orphans are gone

    # another target: everything is made again, the old files go
    code, out = build(state, capsys, "--target-lufs", "-20")
    assert code == 0 and "5 cached (5 made) at -20 LUFS" in out, out
    index = json.loads((phrases / INDEX_FILE).read_text())
    assert index["target_lufs"] == -20.0
    assert all(abs(i["lufs"] + 20) <= 1.0 and i["true_peak_dbtp"] <= -1 for i in index["items"])
    assert set(phrase_files(phrases)) == {i["file"] for i in index["items"]} | {INDEX_FILE}


def test_kiosk_build_usage(tmp_path, capsys) -> None:
    capsys.readouterr()
    assert main(["build", "--state", str(tmp_path)]) == 2
    assert "give a voice ID or --all" in capsys.readouterr().err
    assert main(["build", "nobody", "--state", str(tmp_path)]) == 2
    assert "no installed voice 'nobody'" in capsys.readouterr().err
    assert main(["build", VOICE, "--target-lufs", "3", "--state", str(tmp_path)]) == 2
    assert "from -40 to -6 LUFS" in capsys.readouterr().err
    assert main(["build", "--all", "--state", str(tmp_path / "empty")]) == 0
    assert "no voices installed" in capsys.readouterr().out


# --- crash test ---------------------------------------------------------------------------------

SERVER = r"""
import os, sys
import torch
torch.set_num_threads(1)
from engines.voice import Voice
from kiosk_build.precache import precache
from kiosk_build.provenance import BoxSigner
from provisioning.precache_jobs import precache_jobs
from provisioning.state import State
state = State(sys.argv[1])
active = state.active(sys.argv[2])
jobs = precache_jobs(active.pack, active.manifest, active.manifest_sha256, active.voice_folder,
                     max_new_tokens=int(sys.argv[3]))
signer = BoxSigner.ensure(state.root / "provenance")
voice = Voice.load(active.voice_folder, backend="torch-eager")
print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        precache(voice, jobs, active.phrases, target_lufs=float(line), signer=signer,
                 progress=False)
        os._exit(0)
    print(pid, flush=True)
    sys.stdin.readline()  # "reap": the pid stays ours (a zombie) until the test has killed it
    _, status = os.waitpid(pid, 0)
    print(status, flush=True)
"""


def consistent(state: Path) -> dict[str, Any]:
    """The active version is whole and its phrases/ lists only whole, hash-correct files."""
    active = State(state).active(VOICE)
    assert active is not None
    config = read_config(active.voice_folder)
    for name, sha in (("gpt.ckpt", config.gpt_sha256), ("sovits.pth", config.sovits_sha256),
                      ("prompt.npz", config.prompt_sha256)):  # fmt: skip
        assert precache_mod.file_sha256(active.voice_folder / name) == sha, name
    parsed = read_index(active.phrases)  # the daemon can read it at every moment
    assert precache_mod.verify_index(active.phrases) == []
    index = json.loads((active.phrases / INDEX_FILE).read_text())
    assert parsed.target_lufs == index["target_lufs"]
    for item in index["items"]:  # every listed file was made for the listed target
        assert abs(item["lufs"] - index["target_lufs"]) <= 1.0
    return index


def test_precache_killed_at_random_moments(box, tmp_path) -> None:
    """SIGKILL during precache runs that switch the target: the active voice and its index
    stay whole at every moment, and the next run finishes the job."""
    state = copy_state(box, tmp_path)
    server = ForkServer(SERVER, str(state), VOICE, str(TOKENS))

    def run(target: float, delay: float | None) -> int:
        return server.run(str(target), delay)

    try:
        start = time.perf_counter()
        assert run(-20.0, None) == 0
        full = time.perf_counter() - start
        assert consistent(state)["target_lufs"] == -20.0
        # Kill moments spread evenly over 0.95 of a run (every run remakes all five items,
        # since each asks for the other target), in random order, with a run left to finish
        # every sixth time.  A run's length is re-estimated from the runs that finish, so a
        # busy or idle machine moves the moments with it.
        rng = random.Random(5)
        fractions = [0.95 * (k + 0.5) / 24 for k in range(24)]
        rng.shuffle(fractions)
        outcomes = {"killed": 0, "finished": 0, "partial": 0}
        index = consistent(state)
        runs = 0
        while outcomes["killed"] < 22 and runs < 40:
            target = -18.0 if index["target_lufs"] == -20.0 else -20.0
            fraction = None if runs % 6 == 5 else fractions[runs % len(fractions)]
            began = time.perf_counter()
            status = run(target, None if fraction is None else fraction * full)
            runs += 1
            killed = os.WIFSIGNALED(status)
            outcomes["killed" if killed else "finished"] += 1
            index = consistent(state)
            if not killed:
                assert os.WEXITSTATUS(status) == 0
                assert (index["target_lufs"], len(index["items"])) == (target, 5)
                if fraction is None:
                    full = 0.5 * full + 0.5 * (time.perf_counter() - began)
            elif len(index["items"]) < 5:
                outcomes["partial"] += 1
        # the next run completes, and leaves nothing behind
        final = -18.0 if index["target_lufs"] == -20.0 else -20.0
        assert run(final, None) == 0
        index = consistent(state)
        assert (index["target_lufs"], len(index["items"])) == (final, 5)
        phrases = State(state).active(VOICE).phrases  # type: ignore[union-attr]
        assert set(phrase_files(phrases)) == {i["file"] for i in index["items"]} | {INDEX_FILE}
        print(f"crash test: {runs} runs, one run {full:.1f} s; {outcomes}")
        assert outcomes["killed"] >= 20 and outcomes["partial"] >= 10
    finally:
        server.close()
    with Voice.load(State(state).active(VOICE).voice_folder, backend="torch-eager") as voice:  # type: ignore[union-attr]
        assert voice.voice_id == VOICE


def test_a_killed_kiosk_build_resumes(box, tmp_path, capsys) -> None:
    """The real command, killed once its first new file is in place; the next run finishes
    and remakes only what was missing."""
    state = copy_state(box, tmp_path)
    phrases = State(state).active(VOICE).phrases  # type: ignore[union-attr]
    first = json.loads((phrases / INDEX_FILE).read_text())["items"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "build", VOICE, "--state", str(state),
         "--backend", "torch-eager", "--max-tokens", str(TOKENS), "--target-lufs", "-20"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            index = json.loads((phrases / INDEX_FILE).read_text())
            if index["target_lufs"] == -20.0 and index["items"]:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the build finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
    index = consistent(state)
    assert index["target_lufs"] == -20.0 and 1 <= len(index["items"]) < 5
    assert all(i["key"] not in {f["key"] for f in first} for i in index["items"])
    code, out = build(state, capsys, "--target-lufs", "-20")
    assert code == 0 and f"5 cached ({5 - len(index['items'])} made)" in out, out
    assert len(consistent(state)["items"]) == 5


# --- engines: the 8-bit check on the voice's own inputs -----------------------------------------


def test_int8_check_runs_on_the_voices_own_prompt_and_phrases(box, tmp_path) -> None:
    from kiosk_build.export_onnx import export_gpt
    from kiosk_build.quantize_int8 import validate_int8
    from kiosk_build.voice_build import _check_int8, build_engines, cases_digest, voice_cases

    from engines.backends.onnxruntime_backend import OnnxRuntimeBackend
    from engines.voice_models import load_voice_models
    from provisioning.precache_jobs import precache_jobs

    active = State(box["state"]).active(VOICE)
    assert active is not None
    folder = active.voice_folder
    jobs = precache_jobs(active.pack, active.manifest, active.manifest_sha256, folder)
    features = [job.features or () for job in jobs.phrases]
    cases = voice_cases(folder, features)
    prompt = load_prompt(folder / "prompt.npz")
    # a segment of each phrase in turn (the song has two), after the voice's own prompt
    picked = [features[0][0], features[1][0], features[2][0], features[1][1]]
    assert len(cases) == 4
    for case, (ids, bert) in zip(cases, picked, strict=True):
        n = prompt.phone_ids.numel()
        assert case.phone_ids[:n].tolist() == prompt.phone_ids.tolist()
        assert case.phone_ids[n:].tolist() == ids.tolist()
        assert torch.equal(case.bert[:, n:], torch.from_numpy(bert))
        assert torch.equal(case.prompt_tokens, prompt.semantic_tokens)

    models = load_voice_models(folder / "gpt.ckpt", folder / "sovits.pth")
    graphs = tmp_path / "graphs"
    infos = export_gpt(models.gpt, graphs)  # the 2-layer GPT: prefill, decode, 8-bit decode
    manifest = {"graphs": {name: info.as_json() for name, info in infos.items()}}
    (graphs / "manifest.json").write_text(json.dumps(manifest))
    loads = []

    def loader():
        loads.append(1)
        return models

    verdict = _check_int8(graphs, folder, features, loader, validate_int8)
    assert verdict.startswith(("accepted", "rejected")) and loads == [1]
    record = json.loads((graphs / "manifest.json").read_text())["graphs"]["gpt_decode_int8"]
    check = record["validation"]
    assert check["cases"] == f"voice:{cases_digest(cases)}"
    assert "this voice's prompt and phrases" in check["detail"]
    assert check["tokens_compared"] >= len(cases)
    # the runtime follows the verdict recorded for this voice
    precision = OnnxRuntimeBackend().decode_precision({"graphs": {"gpt_decode_int8": record}})
    assert precision == ("int8" if check["passed"] else "fp32")
    # checked once: a second build neither loads the models nor rewrites the manifest
    stamp = (graphs / "manifest.json").stat().st_mtime_ns
    again = _check_int8(graphs, folder, features, loader, validate_int8)
    assert again.endswith("(checked before)") and loads == [1]
    assert (graphs / "manifest.json").stat().st_mtime_ns == stamp
    # torch-eager needs no engines at all
    assert build_engines(folder, "torch-eager").line().startswith("engines for torch-eager: no")


def test_progress_bar_or_log_lines_and_no_voice_for_archival_only(box, tmp_path, capsys, caplog):
    """A bar on a terminal, a log line per item otherwise; a run that makes only archival
    files never loads the voice."""
    import logging

    from kiosk_build.provenance import BoxSigner

    from provisioning.precache_jobs import precache_jobs

    state = copy_state(box, tmp_path)
    active = State(state).active(VOICE)
    assert active is not None
    jobs = precache_jobs(active.pack, active.manifest, active.manifest_sha256,
                         active.voice_folder, max_new_tokens=TOKENS)  # fmt: skip
    signer = BoxSigner.ensure(state / "provenance")

    def no_voice() -> Voice:
        raise AssertionError("the voice was loaded for archival files")

    for progress in (True, False):
        for item in json.loads((active.phrases / INDEX_FILE).read_text())["items"]:
            if item["kind"] == "archival":
                (active.phrases / item["file"]).unlink()
        capsys.readouterr()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kiosk_build.precache"):
            index = precache_mod.precache(no_voice, jobs, active.phrases, signer=signer,
                                          progress=progress)  # fmt: skip
        assert len(index["items"]) == 5
        err = capsys.readouterr().err
        lines = [r.getMessage() for r in caplog.records]
        if progress:
            assert f"precache {VOICE} v1" in err and "2/2" in err
        else:
            assert err == ""
            assert sum(m.startswith("archival ") and "LUFS" in m for m in lines) == 2
        assert any("3 cached, making 2" in m for m in lines)


def test_voices_lists_the_engines_built_for_each_runtime(box, tmp_path) -> None:
    """`kiosk voices` names the runtimes a voice has engines for (none on torch eager)."""
    from provisioning.provision import voices_listing

    state = State(copy_state(box, tmp_path))
    [listed] = voices_listing(state)
    assert listed["engines"] == []
    active = state.active(VOICE)
    assert active is not None
    graphs = active.voice_folder / "graphs"
    graphs.mkdir(exist_ok=True)
    (graphs / "gpt_prefill.onnx").write_bytes(b"")  # files alone are no export
    assert voices_listing(state)[0]["engines"] == []
    (graphs / "manifest.json").write_text("{}")  # what a finished export writes last
    (state.root / "engines" / VOICE / "0123abcd").mkdir(parents=True)  # a TensorRT entry
    assert voices_listing(state)[0]["engines"] == ["onnxruntime", "tensorrt"]
