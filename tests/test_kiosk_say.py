"""`kiosk say` end to end on official-format files and tiny Hugging Face folders.

The voice is full size (GPT v2 + SoVITS v2Pro with formula weights, written as
the trainer writes them) with an ERes2NetV2 speaker-verification file; BERT
and HuBERT are tiny random models of the real architectures whose widths fit
the voice (1024 and 768), saved with `save_pretrained`.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from appliance.cli import main
from devtools.checkpoint_writer import save_gpt_checkpoint, save_sovits_checkpoint
from devtools.demo_voice import reference_tone
from devtools.formula_weights import formula_speaker_state_dict, formula_state_dict
from devtools.tiny_helpers import write_tiny_helpers
from engines.gpt.config import GPTConfig
from engines.gpt.model import Text2SemanticModel
from engines.sovits.synthesizer import SoVITSModel
from engines.speaker import save_speaker_checkpoint
from engines.wav_io import write_wav

HANZI = "欢迎来到博物馆这首歌是外婆年轻时候唱的我们一起听吧山水人家春天花开了"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("say")
    gpt = Text2SemanticModel(GPTConfig.for_version("v2"))
    gpt_weights = formula_state_dict({k: v.shape for k, v in gpt.state_dict().items()}, 11)
    config = GPTConfig.for_version("v2").to_official()
    sovits = SoVITSModel.for_version("v2Pro")
    sovits_weights = formula_state_dict({k: v.shape for k, v in sovits.state_dict().items()}, 11)
    pretrained = root / "pretrained_models"
    (pretrained / "sv").mkdir(parents=True)
    files = {
        "gpt": save_gpt_checkpoint(root / "voice-e10.ckpt", gpt_weights, config),
        "sovits": save_sovits_checkpoint(
            root / "voice_e8_s80.pth", sovits_weights, {"model": {"version": "v2Pro"}}, "v2Pro"
        ),
        "sv": save_speaker_checkpoint(
            pretrained / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt", formula_speaker_state_dict(11)
        ),
        "ref": write_wav(root / "ref.wav", reference_tone(11, seconds=3.5)),
        "pretrained": pretrained,
        "root": root,
    }
    write_tiny_helpers(pretrained, HANZI)
    return files


def _args(kit: dict[str, Path], text: str, out: Path, *extra: str) -> list[str]:
    voice = ["--gpt", str(kit["gpt"]), "--sovits", str(kit["sovits"]), "--ref", str(kit["ref"])]
    return [
        "say",
        *voice,
        "--ref-text",
        "欢迎来到博物馆。",
        "--pretrained",
        str(kit["pretrained"]),
        "--text",
        text,
        "-o",
        str(out),
        "--backend",
        "torch-eager",
        *extra,
    ]


def test_say_writes_a_32k_wav_and_the_same_seed_gives_the_same_bytes(kit, tmp_path) -> None:
    text = "欢迎来到博物馆！这首歌是外婆年轻时候唱的, we listen together。"
    outputs = []
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        out = tmp_path / f"{name}.wav"
        assert main(_args(kit, text, out, "--seed", seed, "--max-tokens", "6")) == 0
        outputs.append(out)
    with wave.open(str(outputs[0])) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (32000, 1, 2)
        assert wav.getnframes() > 2 * 1280
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in outputs]
    assert digests[0] == digests[1] != digests[2]


def test_onnxruntime_backend_says_the_same(kit, tmp_path, monkeypatch) -> None:
    """Greedy decoding through ONNX Runtime gives the eager audio to a few LSB."""
    monkeypatch.setenv("KIOSK_ONNX_CACHE", str(tmp_path / "onnx-cache"))
    text = "欢迎来到博物馆。"
    wavs = {}
    for backend in ("torch-eager", "onnxruntime"):
        out = tmp_path / f"{backend}.wav"
        args = _args(kit, text, out, "--top-k", "1", "--max-tokens", "8")
        args[args.index("--backend") + 1] = backend
        assert main(args) == 0
        with wave.open(str(out)) as wav:
            wavs[backend] = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert wavs["torch-eager"].shape == wavs["onnxruntime"].shape
    diff = np.abs(wavs["torch-eager"].astype(int) - wavs["onnxruntime"].astype(int)).max()
    assert diff <= 8


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--text", "   ", "the text is empty"),
        ("--text", "🙂🙂🙂", "nothing pronounceable"),
        ("--ref", "{tmp}/missing.wav", "missing.wav"),
        ("--sovits", "{tmp}/missing.pth", "no such file"),
        ("--pretrained", "{tmp}/nowhere", "chinese-hubert-base"),
    ],
)
def test_clear_errors(kit, tmp_path, capsys, flag: str, value: str, message: str) -> None:
    args = _args(kit, "你好世界。", tmp_path / "x.wav", "--max-tokens", "2")
    args[args.index(flag) + 1] = value.format(tmp=tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.wav").exists()


def test_reference_clip_outside_3_to_10_seconds(kit, tmp_path, capsys) -> None:
    short = write_wav(tmp_path / "short.wav", reference_tone(1, seconds=2.0))
    args = _args(kit, "你好世界。", tmp_path / "x.wav")
    args[args.index("--ref") + 1] = str(short)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the reference clip is 2.00 s" in err and "must be 3 to 10 s long" in err


def test_ten_thousand_characters_in_flat_memory(kit, tmp_path) -> None:
    sentence = "这首歌是外婆年轻时候唱的，我们一起听吧。Spring flowers open in the hills. "
    long_text = (sentence * (10_000 // len(sentence) + 1))[:10_000]
    peaks = {}
    for name, text in (("short", sentence), ("long", long_text)):
        out = tmp_path / f"{name}.wav"
        args = _args(kit, text, out, "--max-tokens", "2", "--cut", "cut0")
        code = (
            "import resource, sys; from appliance.cli import main; rc = main(sys.argv[1:]); "
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); "
            "sys.exit(rc)"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        peaks[name] = int(done.stdout.split("MAXRSS")[-1].split()[0]) / 1024
        assert out.stat().st_size > 44
    # The long text is written segment by segment: memory does not grow with it.
    assert peaks["long"] < peaks["short"] + 400, peaks


def _pcm(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


def test_a_prepared_voice_folder_says_the_same_bytes(kit, tmp_path, capsys) -> None:
    """prepare-voice once, then say from the folder: no HuBERT, same audio as the files."""
    folder = tmp_path / "anna"
    prepare = [
        "prepare-voice",
        "--gpt", str(kit["gpt"]), "--sovits", str(kit["sovits"]), "--ref", str(kit["ref"]),
        "--ref-text", "欢迎来到博物馆。", "--pretrained", str(kit["pretrained"]),
        "--id", "anna", "--version", "3", "--out", str(folder),
    ]  # fmt: skip
    assert main(prepare) == 0
    assert {p.name for p in folder.iterdir()} == {"voice.json", "gpt.ckpt", "sovits.pth",
                                                   "prompt.npz"}  # fmt: skip
    assert (folder / "gpt.ckpt").read_bytes() == kit["gpt"].read_bytes()
    text = "这首歌是外婆唱的。"
    direct = tmp_path / "direct.wav"
    assert main(_args(kit, text, direct, "--seed", "4", "--max-tokens", "6")) == 0
    # No HuBERT and no speaker model: only BERT (Mandarin text) is needed from the folder.
    bert_only = tmp_path / "bert-only"
    bert_only.mkdir()
    (bert_only / "chinese-roberta-wwm-ext-large").symlink_to(
        kit["pretrained"] / "chinese-roberta-wwm-ext-large"
    )
    from_folder = tmp_path / "folder.wav"
    say = ["say", "--voice-folder", str(folder), "--pretrained", str(bert_only), "--text", text,
           "-o", str(from_folder), "--backend", "torch-eager", "--seed", "4",
           "--max-tokens", "6"]  # fmt: skip
    assert main(say) == 0
    assert from_folder.read_bytes() == direct.read_bytes()
    streamed = tmp_path / "streamed.wav"
    say[say.index(str(from_folder))] = str(streamed)
    assert main([*say, "--stream"]) == 0
    assert _pcm(streamed).size == _pcm(direct).size  # same tokens, windowed decode
    capsys.readouterr()


def test_say_names_what_is_missing(kit, tmp_path, capsys) -> None:
    assert main(["say", "--text", "你好。", "-o", str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err
    assert "--gpt --sovits --ref --ref-text" in err and "--voice-folder" in err
    assert main(["say", "--voice-folder", str(tmp_path), "--text", "你好。", "--play"]) == 2
    assert "not a voice folder" in capsys.readouterr().err
