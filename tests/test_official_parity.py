"""`kiosk say` against the official app's rules, end to end and rule by rule.

The numbers here are derived from the official app's default engine (the
batch path behind its HTTP API), not recorded from it:

* a segment keeps at most `min(50 * max_sec, 1499)` semantic tokens, or the
  tokens before EOS (EOS is hidden for the first 11 steps);
* each token is 1280 samples at 32 kHz, each segment is followed by
  `int(32000 * fragment_interval)` zeros (0.3 s: 9600), the last one too;
* a segment whose peak exceeds 1 is divided by its peak;
* int16 is `trunc(x * 32768)` (clipped at 32767: the app's cast would wrap
  +1.0 to -32768);
* the reference clip reaches the spectrogram through a windowed-sinc
  resampler to 32 kHz and is divided by min(2, peak) when its peak exceeds 1;
  HuBERT gets the soxr-resampled 16 kHz clip plus 9600 zeros.

The voices are official-format files written by the project's own writer
with formula weights, HuBERT/BERT are tiny models of the real architectures.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

import engines.synthesis as synthesis
from appliance.cli import main
from devtools.checkpoint_writer import save_gpt_checkpoint, save_sovits_checkpoint
from devtools.demo_voice import reference_tone
from devtools.formula_weights import formula_state_dict
from devtools.tiny_helpers import write_tiny_helpers
from engines.features import PROMPT_PAD_SAMPLES, resample
from engines.gpt.config import GPTConfig
from engines.gpt.decoding import MAX_DECODE_STEPS, batch_token_cap, generate
from engines.gpt.model import Text2SemanticModel
from engines.gpt.sampling import EOS_SUPPRESSED_STEPS, SamplingParams
from engines.sovits.synthesizer import SoVITSModel
from engines.speaker import sinc_resample
from engines.synthesis import (
    PAUSE_SAMPLES,
    SynthesisOptions,
    iter_segment_audio,
    iter_segment_pieces,
    limit_peak,
    pause_samples,
    skip_dropped_draw,
)
from engines.voice_prompt import spectrogram_clip
from engines.wav_io import float_to_pcm16, write_wav

SAMPLES_PER_TOKEN = 1280
MAX_SEC = 1  # early_stop_num = 50: the length cap is reached quickly
HANZI = "欢迎来到博物馆这首歌是外婆年轻时候唱的我们一起听吧"
REF_TEXT = "欢迎来到博物馆。"


def _gpt_weights(eos_logit: float | None = None) -> dict[str, torch.Tensor]:
    shapes = {k: v.shape for k, v in Text2SemanticModel(GPTConfig()).state_dict().items()}
    weights = formula_state_dict(shapes, 11)
    if eos_logit is not None:
        # A unit bias on the last LayerNorm makes every hidden row sum to ~512, so
        # a constant EOS row gives EOS a logit of ~512 * eos_logit at every step.
        weights[f"h.layers.{GPTConfig().num_layers - 1}.norm2.bias"].fill_(1.0)
        weights["ar_predict_layer.weight"][-1].fill_(eos_logit)
    return weights


def _sovits(root: Path, name: str, post_gain: float = 1.0) -> Path:
    model = SoVITSModel.for_version("v2")
    weights = formula_state_dict({k: v.shape for k, v in model.state_dict().items()}, 11)
    weights["dec.conv_post.weight"] = weights["dec.conv_post.weight"] * post_gain
    return save_sovits_checkpoint(root / name, weights, {"model": {"version": "v2"}}, "v2")


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parity")
    config = GPTConfig(max_sec=MAX_SEC).to_official()
    pretrained = root / "pretrained_models"
    files = {
        "gpt": save_gpt_checkpoint(root / "capped-e5.ckpt", _gpt_weights(), config),
        "gpt_eos": save_gpt_checkpoint(root / "eos-e5.ckpt", _gpt_weights(1.0), config),
        "sovits": _sovits(root, "voice_e8_s80.pth"),
        "sovits_loud": _sovits(root, "loud_e8_s80.pth", post_gain=40.0),
        "ref": write_wav(root / "ref.wav", reference_tone(11, seconds=3.5)),
        "pretrained": pretrained,
    }
    write_tiny_helpers(pretrained, HANZI)
    return files


def _say(kit: dict[str, Path], out: Path, text: str, gpt: str = "gpt", sovits: str = "sovits"):
    """`kiosk say` greedy with noise scale 0 (the comparison setting); the WAV's int16 samples."""
    args = [
        "say",
        *("--gpt", str(kit[gpt]), "--sovits", str(kit[sovits]), "--ref", str(kit["ref"])),
        *("--ref-text", REF_TEXT, "--pretrained", str(kit["pretrained"])),
        *("--text", text, "-o", str(out), "--backend", "torch-eager", "--cut", "cut5"),
        *("--top-k", "1", "--noise-scale", "0"),
    ]
    assert main(args) == 0
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (32000, 1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


# ----------------------------------------------------------------------- end to end
def test_capped_segments_and_pauses_have_the_official_length(kit, tmp_path) -> None:
    """Two segments that both reach the cap: 50 tokens each (not 51), each + 9600 zeros."""
    pcm = _say(kit, tmp_path / "capped.wav", "欢迎来到博物馆！这首歌是外婆年轻时候唱的。")
    speech = batch_token_cap(50 * MAX_SEC) * SAMPLES_PER_TOKEN
    assert speech == 64000
    assert pcm.size == 2 * (speech + 9600) == 147200
    for start in (0, speech + 9600):
        assert np.count_nonzero(pcm[start : start + speech]) > speech // 2
        assert not pcm[start + speech : start + speech + 9600].any()


def test_eos_after_the_suppressed_steps(kit, tmp_path) -> None:
    """EOS as soon as it is allowed: 11 tokens; the EOS step's token is not kept."""
    pcm = _say(kit, tmp_path / "eos.wav", "这首歌是外婆年轻时候唱的。", gpt="gpt_eos")
    assert pcm.size == EOS_SUPPRESSED_STEPS * SAMPLES_PER_TOKEN + PAUSE_SAMPLES == 23680


def test_full_scale_samples_are_clipped_not_wrapped(kit, tmp_path) -> None:
    """A voice that saturates its tanh: +1.0 becomes 32767, never -32768 (no click)."""
    pcm = _say(kit, tmp_path / "loud.wav", "我们一起听吧。", sovits="sovits_loud")
    assert pcm.size == 50 * SAMPLES_PER_TOKEN + PAUSE_SAMPLES
    speech = pcm[: 50 * SAMPLES_PER_TOKEN].astype(np.int32)
    assert np.count_nonzero(speech == 32767) > 100  # wrapped, these would be -32768
    # The tanh output never exceeds 1, so the peak rule leaves it alone and the
    # speech reaches both rails.
    assert speech.min() == -32768 and speech.max() == 32767


# ----------------------------------------------------------------------- rules
def test_batch_path_token_cap() -> None:
    assert MAX_DECODE_STEPS == 1500
    assert batch_token_cap(None) == 1499  # the 1500th step's token is dropped
    assert batch_token_cap(2700) == 1499  # 50 * 54 s, the released models
    assert batch_token_cap(100) == 100
    assert batch_token_cap(1) == 1
    with pytest.raises(ValueError):
        batch_token_cap(0)


@pytest.mark.parametrize("cap", [5, 30])
def test_the_dropped_step_still_draws(cap: int) -> None:
    """After a capped segment the generator stands where the app's does: one draw on.

    The app samples a token at the step after its cap and drops it, so a seeded
    run's SoVITS noise starts one draw later than the kept tokens alone would say.
    """
    config = GPTConfig(
        phoneme_vocab_size=20,
        vocab_size=33,
        eos_id=32,
        hidden_dim=32,
        num_heads=4,
        num_layers=2,
        ffn_dim=64,
        bert_dim=16,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Text2SemanticModel(config).eval()
    with torch.no_grad():
        model.ar_predict_layer.weight[-1].fill_(-10.0)  # no EOS
    gen = torch.Generator().manual_seed(1)
    inputs = (
        torch.randint(0, 20, (7,), generator=gen),
        torch.randn(16, 7, generator=gen),
        torch.randint(0, 32, (5,), generator=gen),
    )
    params = SamplingParams(top_k=5)
    app = torch.Generator().manual_seed(3)
    ran = generate(model, *inputs, params, app, max_new_tokens=cap + 1)
    ours = torch.Generator().manual_seed(3)
    kept = generate(model, *inputs, params, ours, max_new_tokens=cap)
    skip_dropped_draw(ours, config.vocab_size, cap)
    assert kept.tokens.tolist() == ran.tokens[:cap].tolist()
    torch.testing.assert_close(torch.randn(8, generator=ours), torch.randn(8, generator=app))


def test_pause_rule() -> None:
    assert PAUSE_SAMPLES == pause_samples(0.3) == 9600
    assert pause_samples(0.07) == 2240
    assert pause_samples(0.1) == 3200
    assert pause_samples(1e-4) == 3  # int() truncates, as the app does
    assert pause_samples(0.0) == pause_samples(-1.0) == 0
    assert pause_samples(0.3, 48000) == 14400


def test_peak_rule() -> None:
    loud = np.array([0.5, -2.0, 1.25], dtype=np.float32)
    np.testing.assert_array_equal(limit_peak(loud), loud / np.float32(2.0))
    at_one = np.array([1.0, -0.25], dtype=np.float32)  # exactly 1 is not scaled
    np.testing.assert_array_equal(limit_peak(at_one), at_one)
    quiet = np.array([0.1, -0.2], dtype=np.float32)  # never boosted
    np.testing.assert_array_equal(limit_peak(quiet), quiet)
    assert limit_peak(np.zeros(0, dtype=np.float32)).size == 0


def test_int16_rule() -> None:
    x = np.array([1.0, -1.0, 0.99999, 0.5, -0.50001, 3e-5, -3e-5, 1.5], dtype=np.float32)
    got = float_to_pcm16(x).tolist()
    assert got == [32767, -32768, 32767, 16384, -16384, 0, 0, 32767]
    ordinary = np.linspace(-0.999, 0.999, 1001, dtype=np.float32)
    want = (ordinary * 32768).astype(np.int16)  # the app's own conversion
    np.testing.assert_array_equal(float_to_pcm16(ordinary), want)


def test_pieces_apply_the_peak_rule_and_the_pause(monkeypatch) -> None:
    """Every segment is peak-limited on its own, then followed by its pause."""
    loud = [np.array([0.5, -3.0], dtype=np.float32), np.array([0.2, 0.4], dtype=np.float32)]
    made = iter(loud)
    monkeypatch.setattr(synthesis, "synthesize_phones", lambda *args: next(made).copy())
    segments = [(torch.ones(2, dtype=torch.long), torch.zeros(1024, 2))] * 2
    options = SynthesisOptions(fragment_interval=0.001)
    pieces = list(iter_segment_pieces(None, None, segments, options))  # type: ignore[arg-type]
    assert [(i, p, a.size) for i, p, a in pieces] == [(0, 0, 2), (0, 1, 32), (1, 0, 2), (1, 1, 32)]
    np.testing.assert_array_equal(pieces[0][2], loud[0] / np.float32(3.0))
    np.testing.assert_array_equal(pieces[2][2], loud[1])
    assert not pieces[1][2].any() and not pieces[3][2].any()
    made = iter(loud)
    silent = SynthesisOptions(fragment_interval=0.0)
    assert [a.size for a in iter_segment_audio(None, None, segments, silent)] == [2, 2]  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_spectrogram_clip_is_sinc_resampled(rate: int) -> None:
    """Not the soxr resampler of the HuBERT path: the app's spectrogram uses torchaudio's."""
    clip = resample(reference_tone(3, seconds=3.2), 32000, rate)
    got = spectrogram_clip(torch.from_numpy(clip), rate)
    assert got.shape == (math.ceil(clip.size * 32000 / rate),)
    want = sinc_resample(torch.from_numpy(clip), rate, 32000)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    soxr = torch.from_numpy(resample(clip, rate, 32000))
    assert float((got - soxr).abs().max()) > 1e-4  # the two really differ


def test_spectrogram_clip_at_32k_and_its_peak_rule() -> None:
    clip = torch.from_numpy(reference_tone(4, seconds=3.2))
    torch.testing.assert_close(spectrogram_clip(clip, 32000), clip, rtol=0, atol=0)
    loud = clip / clip.abs().max() * 1.5
    torch.testing.assert_close(spectrogram_clip(loud, 32000), loud / 1.5, rtol=0, atol=0)
    very = clip / clip.abs().max() * 5.0  # divided by min(2, peak): still above 1
    torch.testing.assert_close(spectrogram_clip(very, 32000), very / 2.0, rtol=0, atol=0)


def test_hubert_pad_is_point_three_seconds_at_the_model_rate() -> None:
    """The app appends int(32000 * 0.3) zeros to the 16 kHz clip: 0.6 s, not 0.3 s."""
    assert PROMPT_PAD_SAMPLES == int(32000 * 0.3) == 9600


def test_library_defaults_are_the_official_ones() -> None:
    params = SamplingParams()
    assert (params.top_k, params.top_p, params.temperature, params.repetition_penalty) == (
        15,
        1.0,
        1.0,
        1.35,
    )
    options = SynthesisOptions()
    assert (options.speed, options.noise_scale, options.fragment_interval) == (1.0, 0.5, 0.3)
    assert options.text_split_method == "cut5"
    assert options.max_new_tokens is None and options.max_tokens_per_phone is None
