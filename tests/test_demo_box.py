"""`make demo`'s set-up (`appliance.demo_box`) on the sample kit's tiny voice.

The whole real path runs: espeak-ng speaks the archival stand-ins and the
reference clip, `kiosk keygen`, `pack`, `pack-base`, `sign` write real signed
packs onto a folder standing in for a stick, `kiosk provision` installs them
(health checks included), and the written kiosk.toml goes through the
daemon's config loader.  Only the voice's weights are the kit's tiny ones
instead of the full-size demo voice (that one is what `make demo` measures).
"""

from __future__ import annotations

import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from appliance.config import load_config
from appliance.demo_box import (
    BASE_ID,
    CURATED_ID,
    FREE_ID,
    KEYBOARD_BUTTONS,
    DemoBox,
    DemoSetupError,
    portrait_png,
    set_up,
    write_inputs,
)
from devtools.demo_voice import DemoVoice
from devtools.sample_packs import HEALTH_TOKENS, write_kit
from engines.wav_io import read_wav
from provisioning.provision import voices_listing
from provisioning.sign_verify import verify_target
from provisioning.state import State

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_voice(folder: Path) -> DemoVoice:
    """The sample kit's 2-layer GPT and SoVITS (written once, like the demo voice)."""
    done = folder / "kit-written"
    if not done.exists():
        write_kit(folder)
        done.touch()
    return DemoVoice(
        folder, folder / "chen-e10.ckpt", folder / "chen_e8_s80.pth", folder / "ref.wav"
    )


def demo_set_up(out: Path, lines: list[str]) -> DemoBox:
    """The set-up on the tiny voice, on torch eager (no ONNX export: this module has 90 s)."""
    return set_up(
        out,
        voice_writer=tiny_voice,
        output="null",
        backend="torch-eager",
        progress=lines.append,
        phrase_tokens=20,
        health_tokens=HEALTH_TOKENS,
    )


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> dict:
    """One set-up from nothing: its box, printed lines and time."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: apt-get install espeak-ng (make apt does it)")
    out = tmp_path_factory.mktemp("demo") / "out"
    lines: list[str] = []
    start = time.perf_counter()
    box = demo_set_up(out, lines)
    return {"box": box, "lines": lines, "seconds": time.perf_counter() - start}


def manifest_of(state: Path, voice_id: str, kind: str = "voice"):
    active = State(state).active(voice_id, kind)
    assert active is not None, f"{voice_id} is not active"
    return active.manifest


def test_packs_are_signed_on_the_stick_with_a_private_key(first) -> None:
    box: DemoBox = first["box"]
    for pack_id in (CURATED_ID, FREE_ID, BASE_ID):
        summary = verify_target(box.pack(pack_id), box.keys / "demo.pub")
        assert pack_id in summary
    assert box.key.stat().st_mode & 0o777 == 0o600
    trusted = box.config_dir / "trusted-keys" / "demo.pub"
    assert trusted.read_bytes() == (box.keys / "demo.pub").read_bytes()
    assert not (box.config_dir / "trusted-keys" / "demo.key").exists()


def test_provisioned_through_the_real_path_with_both_text_policies(first) -> None:
    box: DemoBox = first["box"]
    listing = {v["id"]: v for v in voices_listing(State(box.state))}
    assert listing[CURATED_ID]["text_policy"] == "curated"
    assert listing[FREE_ID]["text_policy"] == "free"
    assert all(v["enabled"] for v in listing.values())
    assert manifest_of(box.state, BASE_ID, "base").bert_folder  # free text needs BERT
    report = (box.state / "reports" / "kiosk-report.txt").read_text()
    assert "activated demo v1" in report and "activated demo-free v1" in report


def test_archival_stand_ins_are_speech_from_espeak(first) -> None:
    box: DemoBox = first["box"]
    manifest = manifest_of(box.state, CURATED_ID)
    titles = sorted(a.title for a in manifest.voice.archival)
    assert len(titles) == 2 and all("espeak-ng" in t for t in titles)
    pack = State(box.state).active(CURATED_ID).pack
    for item in manifest.voice.archival:
        samples, rate = read_wav(pack / item.path)
        mono = samples.mean(0) if samples.ndim == 2 else samples
        assert rate == 32000 and mono.size / rate > 2.0
        # Speech comes in syllables: loud 20 ms frames and near-silent ones between words.
        frames = mono[: mono.size // 640 * 640].reshape(-1, 640)
        level = np.sqrt((frames**2).mean(axis=1))
        assert level.max() > 0.05 and (level < level.max() / 30).mean() > 0.05


def test_portrait_is_a_drawn_png(first) -> None:
    box: DemoBox = first["box"]
    manifest = manifest_of(box.state, CURATED_ID)
    data = (State(box.state).active(CURATED_ID).pack / manifest.voice.portrait).read_bytes()
    assert data == portrait_png()
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (240, 300, 8, 2)
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8 : start - 4])[0]
    raw = np.frombuffer(zlib.decompress(data[start : start + length]), np.uint8)
    pixels = raw.reshape(height, 1 + width * 3)[:, 1:].reshape(height, width, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # a picture, not a flat fill


def test_config_loads_and_every_key_names_an_installed_item(first) -> None:
    box: DemoBox = first["box"]
    config = load_config(box.config)
    assert Path(config.state_dir) == box.state.resolve()
    assert config.audio.output == "null"
    assert config.backend.name == "torch-eager"
    assert [b.key for b in config.buttons] == [k for k, *_ in KEYBOARD_BUTTONS]
    for button in config.buttons:
        assert button.source == "keyboard"
        manifest = manifest_of(box.state, button.voice)
        if button.archival:
            ids = {Path(a.path).stem for a in manifest.voice.archival}
            assert button.archival in ids
        else:
            assert button.phrase in {p.id for p in manifest.voice.phrases}


def test_second_run_reuses_everything(first) -> None:
    box: DemoBox = first["box"]
    voice_folder = State(box.state).active(CURATED_ID).folder
    before = {
        p: p.stat().st_mtime_ns
        for p in (box.pack(CURATED_ID) / "manifest.json", box.key, voice_folder / "voice")
    }
    lines: list[str] = []
    start = time.perf_counter()
    demo_set_up(box.out, lines)
    took = time.perf_counter() - start
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert sum("made and signed already" in line for line in lines) == 3
    assert State(box.state).active(CURATED_ID).folder == voice_folder
    assert took < first["seconds"] / 2, (took, first["seconds"])


def test_an_unsigned_pack_on_the_stick_is_made_again(first) -> None:
    box: DemoBox = first["box"]
    (box.pack(FREE_ID) / "manifest.json.sig").unlink()
    lines: list[str] = []
    demo_set_up(box.out, lines)
    assert any(line.startswith(f"  kiosk pack {FREE_ID}") for line in lines)
    verify_target(box.pack(FREE_ID), box.keys / "demo.pub")


def test_missing_espeak_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on it
    with pytest.raises(DemoSetupError, match=r"apt-get install espeak-ng"):
        write_inputs(DemoBox(tmp_path / "out"), progress=lambda line: None)
