"""`make demo`: a whole demo box on this machine, set up the way a museum's box is.

Everything a newcomer needs is made here by the project's own code, nothing is
downloaded and nothing is read from outside the repository:

1. the workstation's side, in `<out>/workstation/`: the demo voice's official
   GPT `.ckpt` / SoVITS `.pth` files (`devtools.demo_voice`: seeded, untrained
   weights, so what it says is not speech), tiny seeded stand-ins for the
   HuBERT and BERT helper models (`devtools.tiny_helpers`), and the curator's
   inputs: phrases, consent, a bio, a portrait drawn here, and archival
   recordings spoken by `espeak-ng` (stand-ins, so a newcomer hears real speech
   where a museum plays an elder's original recording);
2. a signing key in `<out>/keys/` (mode 0600) and, in `<out>/stick/` (a folder
   standing in for a USB stick), the packs made and signed by `kiosk pack`,
   `kiosk pack-base` and `kiosk sign`;
3. the box: the stick provisioned into `<out>/state/` by the Provisioner that
   `kiosk provision` runs (signature, copy, engines, phrase cache, health check,
   activation, reports), trusting `<out>/config/trusted-keys/`, and
   `<out>/config/kiosk.toml` for
   `kiosk run` (the CPU backend, the default sound device or the null device
   when there is none, keyboard keys standing in for the buttons).

The demo shows both text policies: `demo` is a curated voice (only its listed
phrases, two archival stand-ins), `demo-free` lets visitors type their own
text (it needs the base pack's BERT on the box, so one is provisioned too).

The untrained demo voices never say "end" by themselves, so their cached
phrases and the free text the daemon speaks are capped at
`DEMO_PHRASE_TOKENS` semantic tokens per segment (3 s of sound); a museum's
trained voices stop on their own and get no such cap.

Every step is skipped when its result is already there, so a second
`make demo` only checks and starts (the daemon reuses the engines and the
phrase cache it built in the state folder).

Layering: this is the one product module that imports `devtools`, and only
for the demo voice's weights and helper stand-ins.  A museum's box never runs
it; the firmware's own path (pack → sign → provision → run) is used unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# `engines` first: it sets the OpenMP wait policy before anything imports torch.
from engines.wav_io import SAMPLE_RATE, read_wav, write_wav

if TYPE_CHECKING:
    from devtools.demo_voice import DemoVoice

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
#: Writes official GPT/SoVITS files into a folder (the demo voice; tests pass a tiny one).
VoiceWriter = Callable[[Path], "DemoVoice"]

CURATED_ID = "demo"
FREE_ID = "demo-free"
BASE_ID = "base"
PACK_VERSION = 1
#: Semantic tokens per cached phrase segment of the untrained demo voice (3 s of sound),
#: which never says "end" by itself (see `provision`).
DEMO_PHRASE_TOKENS = 75
KEY_NAME = "demo"
#: The demo's technician PIN (a museum's box sets its own in /etc/kiosk/kiosk.toml).
DEMO_PIN = "1234"
#: The keys `make demo` gives the voices (typed in the terminal running `kiosk run`).
KEYBOARD_BUTTONS = (
    ("1", CURATED_ID, "phrase", "welcome"),
    ("2", CURATED_ID, "phrase", "song"),
    ("3", CURATED_ID, "phrase", "hello-en"),
    ("4", CURATED_ID, "archival", "recording-02"),  # Mandarin (see ARCHIVAL)
    ("5", CURATED_ID, "archival", "recording-01"),  # English
    ("6", FREE_ID, "phrase", "greeting"),
)

#: Words of the reference clip, spoken by espeak-ng (Mandarin).
REFERENCE_TEXT = "欢迎来到民俗博物馆，请按下按钮。"
#: Archival stand-ins: (title a visitor sees = the file's stem, espeak-ng voice, words).
#: The names are not file-name safe, so the pack stores them as `recording-NN` in sorted
#: order (English 01, Mandarin 02) and keeps the name as the title.
ARCHIVAL = (
    (
        "Mandarin stand-in for an archival recording (espeak-ng)",
        "cmn",
        "这是一段档案录音的替身，由 espeak-ng 朗读。真正的展品在这里播放老人的原始录音。",
    ),
    (
        "English stand-in for an archival recording (espeak-ng)",
        "en-us",
        "This is a stand-in for an archival recording, spoken by espeak-ng. "
        "On a museum's kiosk, the elder's own recording plays here.",
    ),
)

CURATED_PHRASES = """\
[[phrase]]
id = "welcome"
text = "欢迎来到民俗博物馆。"
lang = "zh"
label_zh = "欢迎"
label_en = "Welcome"
button = 1

[[phrase]]
id = "song"
text = "这首山歌是外婆年轻的时候在田里唱的。"
lang = "zh"
label_zh = "山歌"
label_en = "The song"
button = 2

[[phrase]]
id = "hello-en"
text = "Welcome! Press a button to hear the voices of our elders."
lang = "en"
label_zh = "英文问候"
label_en = "Hello"
button = 3
"""

FREE_PHRASES = """\
[[phrase]]
id = "greeting"
text = "你好！请在屏幕上写一句话，我来说给你听。"
lang = "zh"
label_zh = "你好"
label_en = "Hello"
button = 1
"""

CONSENT = """\
subject = "{subject}"
status = "living"
authorised_by = "the Heritage Voice Kiosk project (demo)"
relation = "self"
date = 2026-01-01
document_sha256 = "{document}"
text_policy = "{policy}"
exhibits = ["demo"]
valid_until = 2099-12-31

[disclosure]
zh = "此声音由人工智能生成（演示声音，权重未经训练）。"
en = "This voice is generated by AI (a demo voice with untrained weights)."
"""

BIO = """\
name_zh = "{name_zh}"
name_en = "{name_en}"
dates = "demo voice"
bio_zh = "{bio_zh}"
bio_en = "{bio_en}"
"""

CONSENT_DOCUMENT = (
    "Demo consent record of the Heritage Voice Kiosk.\n"
    "The demo voices are made from seeded, untrained weights; they are nobody's voice.\n"
)

UNTRAINED = (
    "The demo weights are untrained: the synthetic phrases run the whole pipeline, "
    "but they are not speech. The archival stand-ins are real speech (espeak-ng)."
)


class DemoSetupError(ValueError):
    """A step of the demo set-up failed; the message says what to do."""


@dataclass(frozen=True)
class DemoBox:
    """Where the demo box's parts are (all under one `out` folder)."""

    out: Path

    @property
    def workstation(self) -> Path:
        return self.out / "workstation"

    @property
    def keys(self) -> Path:
        return self.out / "keys"

    @property
    def key(self) -> Path:
        return self.keys / f"{KEY_NAME}.key"

    @property
    def stick(self) -> Path:
        return self.out / "stick"

    @property
    def state(self) -> Path:
        return self.out / "state"

    @property
    def config_dir(self) -> Path:
        return self.out / "config"

    @property
    def config(self) -> Path:
        return self.config_dir / "kiosk.toml"

    def pack(self, pack_id: str) -> Path:
        return self.stick / f"{pack_id}-{PACK_VERSION}.kvp"


# --- the steps -------------------------------------------------------------------------


def _kiosk(args: Sequence[str], what: str) -> None:
    """Run one `kiosk` command in this process (the same code a technician runs)."""
    from appliance.cli import main

    code = main(list(args))
    if code != 0:
        raise DemoSetupError(f"{what} failed (kiosk {args[0]} exited {code}; see above)")


def espeak(text: str, voice: str, out: Path) -> Path:
    """Speak `text` with espeak-ng into a 32 kHz mono WAV (the rate the voices use)."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise DemoSetupError(
            "espeak-ng is missing: it speaks the demo's archival stand-ins; install it with "
            "`sudo apt-get install espeak-ng` (or run `make demo`, which installs it)"
        )
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        raw = Path(tmp) / "raw.wav"
        result = subprocess.run(
            [binary, "-v", voice, "-s", "150", "-w", str(raw), text],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode or not raw.is_file():
            raise DemoSetupError(
                f"espeak-ng -v {voice} failed ({result.stderr.strip() or result.returncode}); "
                f"check `espeak-ng --voices={voice}` lists the voice"
            )
        samples, rate = read_wav(raw)
    import soxr

    mono = samples.mean(0) if samples.ndim == 2 else samples
    audio = soxr.resample(mono.astype(np.float32), rate, SAMPLE_RATE, quality="HQ")
    return write_wav(out, np.clip(audio, -1.0, 1.0).astype(np.float32))


def portrait_png(width: int = 240, height: int = 300, hue: float = 0.0) -> bytes:
    """A drawn portrait (head and shoulders on a warm gradient), as PNG bytes.

    Drawn with numpy and encoded with zlib so the demo carries no image asset.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    top = np.array([236, 214, 178], np.float32)
    bottom = np.array([176, 122, 84], np.float32)
    mix = (y / (height - 1))[..., None]
    image = top * (1 - mix) + bottom * mix
    shift = np.array([np.cos(hue), np.cos(hue + 2.1), np.cos(hue + 4.2)], np.float32) * 18
    cx = width / 2
    head = ((x - cx) / (width * 0.19)) ** 2 + ((y - height * 0.38) / (height * 0.17)) ** 2 <= 1
    hair = ((x - cx) / (width * 0.21)) ** 2 + ((y - height * 0.33) / (height * 0.16)) ** 2 <= 1
    shoulders = (
        ((x - cx) / (width * 0.42)) ** 2 + ((y - height * 1.02) / (height * 0.42)) ** 2
    ) <= 1
    image[shoulders] = np.array([70, 84, 110], np.float32) + shift
    image[hair & (y < height * 0.36)] = np.array([210, 210, 214], np.float32)
    image[head & ~(hair & (y < height * 0.30))] = np.array([222, 184, 150], np.float32)
    for ex in (cx - width * 0.07, cx + width * 0.07):  # eyes
        eye = ((x - ex) ** 2 + (y - height * 0.38) ** 2) <= (width * 0.016) ** 2
        image[eye] = np.array([60, 44, 36], np.float32)
    smile = (np.abs(np.hypot(x - cx, y - height * 0.40) - width * 0.075) < 1.4) & (
        y > height * 0.44
    )
    image[smile & head] = np.array([150, 80, 70], np.float32)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _hanzi(*texts: str) -> str:
    return "".join(dict.fromkeys(c for t in texts for c in t if "\u4e00" <= c <= "\u9fff"))


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def write_inputs(box: DemoBox, progress: Progress) -> dict[str, Path]:
    """The curator's input files for both voices (rewritten only when they differ)."""
    ws = box.workstation
    document = hashlib.sha256(CONSENT_DOCUMENT.encode()).hexdigest()
    files: dict[str, Path] = {}
    _write_if_changed(ws / "consent-document.txt", CONSENT_DOCUMENT.encode())
    people = {
        CURATED_ID: ("演示阿嬷", "Demo Ama", "curated", CURATED_PHRASES, 0.0),
        FREE_ID: ("演示阿公", "Demo Agong", "free", FREE_PHRASES, 2.5),
    }
    for voice_id, (name_zh, name_en, policy, phrases, hue) in people.items():
        folder = ws / "inputs" / voice_id
        what = "只说列出的句子" if policy == "curated" else "访客可以输入自己的句子"
        what_en = (
            "It says only its listed phrases."
            if policy == "curated"
            else "Visitors may type their own text."
        )
        bio = BIO.format(
            name_zh=name_zh,
            name_en=name_en,
            bio_zh=f"这是演示用的声音，权重未经训练，合成的声音不是语音。{what}。",
            bio_en=f"A demo voice with untrained weights: its synthesis is not speech. {what_en}",
        )
        consent = CONSENT.format(
            subject=f"{name_zh} ({name_en}, a demo voice)", document=document, policy=policy
        )
        for name, text in (("phrases.toml", phrases), ("consent.toml", consent), ("bio.toml", bio)):
            _write_if_changed(folder / name, text.encode())
            files[f"{voice_id}/{name}"] = folder / name
        _write_if_changed(folder / "portrait.png", portrait_png(hue=hue))
        files[f"{voice_id}/portrait"] = folder / "portrait.png"
    archival = ws / "inputs" / CURATED_ID / "archival"
    archival.mkdir(parents=True, exist_ok=True)
    for title, voice, text in ARCHIVAL:
        target = archival / f"{title}.wav"
        if not target.is_file():
            progress(f"  speaking the archival stand-in {title!r} with espeak-ng")
            espeak(text, voice, target)
    files["archival"] = archival
    reference = ws / "reference.wav"
    if not reference.is_file():
        progress("  speaking the reference clip with espeak-ng")
        espeak(REFERENCE_TEXT, "cmn", reference)
    files["reference"] = reference
    return files


def write_helpers(box: DemoBox, progress: Progress) -> Path:
    """Tiny seeded HuBERT/BERT stand-ins in the `pretrained_models/` layout (made once)."""
    from devtools.tiny_helpers import write_tiny_helpers

    target = box.workstation / "pretrained_models"
    if (target / "chinese-roberta-wwm-ext-large" / "config.json").is_file():
        return target
    progress("  writing tiny stand-ins for the HuBERT and BERT helper models")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    phrases = CURATED_PHRASES + FREE_PHRASES
    write_tiny_helpers(tmp, _hanzi(REFERENCE_TEXT, phrases, "你好欢迎博物馆声音老人山歌"))
    tmp.rename(target)
    return target


def _pack_is_signed(box: DemoBox, pack: Path) -> bool:
    """True when `pack` verifies against the demo key (so it need not be made again)."""
    from provisioning.sign_verify import verify_target

    if not pack.is_dir():
        return False
    try:
        verify_target(pack, box.keys / f"{KEY_NAME}.pub")
    except (ValueError, OSError):
        return False
    return True


def make_packs(
    box: DemoBox, voice: DemoVoice, inputs: dict[str, Path], helpers: Path, progress: Progress
) -> list[Path]:
    """`kiosk pack` / `pack-base` + `kiosk sign` onto the stick, each pack made once."""
    box.stick.mkdir(parents=True, exist_ok=True)
    made = []
    for voice_id in (CURATED_ID, FREE_ID):
        pack = box.pack(voice_id)
        made.append(pack)
        if _pack_is_signed(box, pack):
            progress(f"  {pack.name}: made and signed already")
            continue
        shutil.rmtree(pack, ignore_errors=True)  # unsigned or damaged: make it again
        progress(f"  kiosk pack {voice_id} (prompt and phrase features with the helper stand-ins)")
        args = [
            "pack",
            "--id", voice_id,
            "--version", str(PACK_VERSION),
            "--gpt", str(voice.gpt),
            "--sovits", str(voice.sovits),
            "--ref", str(inputs["reference"]),
            "--ref-text", REFERENCE_TEXT,
            "--ref-lang", "zh",
            "--phrases", str(inputs[f"{voice_id}/phrases.toml"]),
            "--consent", str(inputs[f"{voice_id}/consent.toml"]),
            "--bio", str(inputs[f"{voice_id}/bio.toml"]),
            "--portrait", str(inputs[f"{voice_id}/portrait"]),
            "--pretrained", str(helpers),
            "--out", str(box.stick),
        ]  # fmt: skip
        if voice_id == CURATED_ID:
            args += ["--archival", str(inputs["archival"])]
        _kiosk(args, f"packing {voice_id}")
        _kiosk(["sign", str(pack), "--key", str(box.key)], f"signing {voice_id}")
    base = box.pack(BASE_ID)
    made.append(base)
    if _pack_is_signed(box, base):
        progress(f"  {base.name}: made and signed already")
    else:
        shutil.rmtree(base, ignore_errors=True)
        progress("  kiosk pack-base (the BERT stand-in, for the free-text voice)")
        bert = helpers / "chinese-roberta-wwm-ext-large"
        _kiosk(
            ["pack-base", "--bert", str(bert), "--id", BASE_ID, "--version", str(PACK_VERSION),
             "--out", str(box.stick)],
            "packing the base pack",
        )  # fmt: skip
        _kiosk(["sign", str(base), "--key", str(box.key)], "signing the base pack")
    return made


def make_keys(box: DemoBox, progress: Progress) -> None:
    """The demo signing key (0600, kept off the box) and the box's trusted copy of its .pub."""
    pub = box.keys / f"{KEY_NAME}.pub"
    if not (box.key.is_file() and pub.is_file()):
        progress(f"  kiosk keygen {KEY_NAME} (the demo's signing key, {box.keys})")
        shutil.rmtree(box.keys, ignore_errors=True)
        _kiosk(["keygen", KEY_NAME, "--out", str(box.keys)], "making the demo key")
    os.chmod(box.key, 0o600)
    trusted = box.config_dir / "trusted-keys"
    trusted.mkdir(parents=True, exist_ok=True)
    _write_if_changed(trusted / pub.name, pub.read_bytes())


def has_sound_device() -> bool:
    """True when PortAudio finds a default output device."""
    try:
        import sounddevice

        device = sounddevice.query_devices(kind="output")
    except Exception:  # no PortAudio, no ALSA device: the demo plays to the null device
        return False
    return bool(device) and int(device.get("max_output_channels", 0)) > 0


def demo_config(box: DemoBox, output: str, backend: str) -> str:
    """The demo's kiosk.toml: the embedded defaults, plus what makes it a demo."""
    lines = [
        "# The demo box of `make demo` (written by appliance/demo_box.py; rewritten on each run).",
        "# Every key not set here keeps its default (appliance/kiosk.example.toml lists them).",
        f'state_dir = "{box.state.resolve()}"',
        "",
        "[web]",
        f'pin = "{DEMO_PIN}"  # the technician page, /tech',
        "",
        "[audio]",
        f'output = "{output}"  # "default" when a sound card is found, else "null"',
        "",
        "[backend]",
        f'name = "{backend}"',
        "",
    ]
    for key, voice, kind, item in KEYBOARD_BUTTONS:
        lines += [
            "[[button]]",
            f'name = "key-{key}"',
            'source = "keyboard"',
            f'key = "{key}"',
            f'voice = "{voice}"',
            f'{kind} = "{item}"',
            "",
        ]
    return "\n".join(lines)


def write_config(box: DemoBox, output: str | None, backend: str, progress: Progress) -> Path:
    if output is None:
        output = "default" if has_sound_device() else "null"
    text = demo_config(box, output, backend)
    _write_if_changed(box.config, text.encode())
    try:
        from appliance.config import load_config
    except ImportError:  # the config module is not there yet: kiosk run checks it
        load_config = None
    if load_config is not None:
        load_config(box.config)
    progress(f"  {box.config}: audio to {output!r}, backend {backend}, keyboard keys 1-6")
    return box.config


def provision(
    box: DemoBox,
    backend: str,
    progress: Progress,
    phrase_tokens: int = DEMO_PHRASE_TOKENS,
    health_tokens: int | None = None,
) -> None:
    """Install the stand-in stick's packs: `kiosk provision`'s own Provisioner and reports.

    One difference from a museum's box, for the untrained demo voice only: its
    GPT never says "end", so every cached phrase segment is capped at
    `DEMO_PHRASE_TOKENS` tokens (a trained voice stops by itself).
    """
    from appliance.say import export_on_demand
    from provisioning.provision import Provisioner, box_trust, write_reports
    from provisioning.state import State

    box.state.mkdir(parents=True, exist_ok=True)
    state = State(box.state)
    provisioner = Provisioner(
        state,
        box_trust(box.config_dir),
        backend=backend,
        export=export_on_demand,
        precache_tokens=phrase_tokens,
        progress=progress,
        **({} if health_tokens is None else {"health_tokens": health_tokens}),
    )
    items = provisioner.run(box.stick)
    report = write_reports(state, items)
    refused = [item for item in items if item.status == "refused"]
    if refused:
        raise DemoSetupError(
            f"provisioning refused {len(refused)} pack(s): {refused[0].reason} (report: {report})"
        )


def set_up(
    out: Path,
    *,
    voice_writer: VoiceWriter | None = None,
    output: str | None = None,
    backend: str = "onnxruntime",
    progress: Progress = print,
    phrase_tokens: int = DEMO_PHRASE_TOKENS,
    health_tokens: int | None = None,
) -> DemoBox:
    """Make (or reuse) every part of the demo box under `out`; returns where they are.

    `phrase_tokens` caps each cached phrase segment, `health_tokens` the provisioning
    health check (None: the box's default); tests make both short.
    """
    box = DemoBox(out)
    start = time.perf_counter()
    progress("[1/6] the demo voice's official files (untrained, seeded weights: not speech)")
    if voice_writer is None:
        from devtools.demo_voice import write_demo_voice as voice_writer
    voice = voice_writer(box.workstation / "voice")
    progress("[2/6] the curator's inputs: phrases, consent, bio, portrait, archival stand-ins")
    inputs = write_inputs(box, progress)
    helpers = write_helpers(box, progress)
    progress("[3/6] the demo signing key")
    make_keys(box, progress)
    progress(f"[4/6] packs on the stand-in USB stick {box.stick}")
    make_packs(box, voice, inputs, helpers, progress)
    progress(f"[5/6] kiosk provision into {box.state} (engines and phrase cache, {backend})")
    provision(box, backend, progress, phrase_tokens, health_tokens)
    progress("[6/6] the demo's kiosk.toml")
    write_config(box, output, backend, progress)
    progress(f"demo box ready in {time.perf_counter() - start:.1f} s. {UNTRAINED}")
    return box


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.demo_box",
        description="Set up the demo box of `make demo` (voices packed, signed and provisioned "
        "from a stand-in stick), then start `kiosk run` on it unless --setup-only.",
    )
    parser.add_argument("--out", default="out/demo", help="folder for everything (out/demo)")
    parser.add_argument(
        "--backend",
        default="onnxruntime",
        choices=("auto", "torch-eager", "onnxruntime", "torch-cuda", "tensorrt"),
        help="the daemon's runtime (default onnxruntime: the CPU backend)",
    )
    parser.add_argument(
        "--output", help="audio output for the daemon (default: 'default' if a sound card is "
        "found, else 'null')"
    )  # fmt: skip
    parser.add_argument("--setup-only", action="store_true", help="do not start kiosk run")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        box = set_up(Path(args.out), output=args.output, backend=args.backend)
    except (ValueError, OSError) as exc:  # DemoSetupError, a refused input, a full disk
        print(f"make demo: {exc}", file=sys.stderr)
        return 2
    if args.setup_only:
        return 0
    command = ["kiosk", "run", "--config", str(box.config)]
    keys = ", ".join(f"{key} {voice}/{item}" for key, voice, _kind, item in KEYBOARD_BUTTONS)
    print(
        f"\nstarting: {' '.join(command)}\n"
        "  touch UI:    http://127.0.0.1:8080  (open it in a browser)\n"
        f"  technician:  http://127.0.0.1:8080/tech  (PIN {DEMO_PIN})\n"
        f"  buttons:     keys in this terminal: {keys}\n"
        "  Ctrl-C stops it; `make demo` again starts it in seconds.\n",
        flush=True,
    )
    # The untrained demo voices never say "end": cap free text as their cached phrases
    # are capped (the daemon's development setting), unless the caller set it.
    from appliance.daemon import MAX_TOKENS_ENV

    os.environ.setdefault(MAX_TOKENS_ENV, str(DEMO_PHRASE_TOKENS))
    # `kiosk run` in this process (torch and the engine are imported already): the
    # daemon in the foreground, Ctrl-C stops it.
    from appliance.cli import main as kiosk

    return kiosk(command[1:])


if __name__ == "__main__":
    sys.exit(main())
