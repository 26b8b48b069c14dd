"""Speaker-verification embedding (ERes2NetV2) for v2Pro/v2ProPlus: front end, model, files.

No official weights ship with the project, so the model is checked through a
checkpoint written in the official layout from formula weights. The front end is
checked against independent float64 re-derivations written here from the
published recipes (torchaudio's windowed-sinc resampler, Kaldi's fbank).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from devtools.formula_weights import formula_speaker_state_dict
from engines.speaker import (
    OFFICIAL_FILENAME,
    SpeakerCheckpointError,
    SpeakerEncoder,
    kaldi_fbank,
    load_speaker_encoder,
    mel_filterbank,
    num_frames,
    official_key_shapes,
    resample_32k_to_16k,
    save_speaker_checkpoint,
    sv_features,
)

SEED = 7
EMBED_DIM = 20480


# ---------------------------------------------------------------- fixtures


def _clip(n: int, seed: int, sr: int = 32000) -> torch.Tensor:
    """A voiced-like test signal: two partials, slow amplitude wobble, light noise."""
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    f0 = 110.0 + 40.0 * seed
    w = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 3.1 * f0 * t + 0.7)
    w = w * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)) + 0.02 * rng.standard_normal(n)
    return torch.from_numpy(w.astype(np.float32))


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return formula_speaker_state_dict(SEED)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, weights: dict[str, torch.Tensor]) -> Path:
    path = tmp_path_factory.mktemp("sv") / OFFICIAL_FILENAME
    return save_speaker_checkpoint(path, weights)


@pytest.fixture(scope="module")
def encoder(ckpt: Path) -> SpeakerEncoder:
    return load_speaker_encoder(ckpt)


# ------------------------------------------------------- official key layout


def _bn(prefix: str, n: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (f"{prefix}.weight", (n,)),
        (f"{prefix}.bias", (n,)),
        (f"{prefix}.running_mean", (n,)),
        (f"{prefix}.running_var", (n,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def _aff(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    inner = c // 4
    return [
        (f"{prefix}.local_att.0.weight", (inner, 2 * c, 1, 1)),
        (f"{prefix}.local_att.0.bias", (inner,)),
        *_bn(f"{prefix}.local_att.1", inner),
        (f"{prefix}.local_att.3.weight", (c, inner, 1, 1)),
        (f"{prefix}.local_att.3.bias", (c,)),
        *_bn(f"{prefix}.local_att.4", c),
    ]


def expected_official_keys() -> list[tuple[str, tuple[int, ...]]]:
    """The reference ERes2NetV2(baseWidth=24, scale=4, expansion=4) state dict, re-derived by hand.

    Stem conv 1->64; stages of [3, 4, 6, 3] bottlenecks with planes 64·2^s, branch
    width floor(planes·24/64), 4 branches, output planes·4; stages 3-4 join branches
    with AFF(width); a projection shortcut where stride or channels change;
    layer3_ds 1024->2048 (3x3); fuse34 AFF(2048); seg_1 Linear(2·20480 -> 192).
    """
    keys = [("conv1.weight", (64, 1, 3, 3)), *_bn("bn1", 64)]
    in_planes = 64
    for s, blocks in enumerate((3, 4, 6, 3)):
        planes = 64 * 2**s
        width = math.floor(planes * 24 / 64)
        out = planes * 4
        for b in range(blocks):
            p = f"layer{s + 1}.{b}"
            keys += [
                (f"{p}.conv1.weight", (4 * width, in_planes, 1, 1)),
                *_bn(f"{p}.bn1", 4 * width),
            ]
            keys += [(f"{p}.convs.{i}.weight", (width, width, 3, 3)) for i in range(4)]
            for i in range(4):
                keys += _bn(f"{p}.bns.{i}", width)
            if s >= 2:
                for j in range(3):
                    keys += _aff(f"{p}.fuse_models.{j}", width)
            keys += [(f"{p}.conv3.weight", (out, 4 * width, 1, 1)), *_bn(f"{p}.bn3", out)]
            stride = 2 if (b == 0 and s > 0) else 1
            if stride != 1 or in_planes != out:
                keys += [(f"{p}.shortcut.0.weight", (out, in_planes, 1, 1))]
                keys += _bn(f"{p}.shortcut.1", out)
            in_planes = out
    keys += [("layer3_ds.weight", (2048, 1024, 3, 3)), *_aff("fuse34", 2048)]
    keys += [("seg_1.weight", (192, 2 * 2048 * 10)), ("seg_1.bias", (192,))]
    return keys


def test_module_keys_are_the_official_ones() -> None:
    assert list(official_key_shapes().items()) == expected_official_keys()
    shapes = official_key_shapes()
    assert len(shapes) == 1001
    assert sum(k.endswith("num_batches_tracked") for k in shapes) == 157
    assert sum(math.prod(s) for s in shapes.values()) == 53_588_221


def test_checkpoint_file_is_a_plain_float32_state_dict(ckpt: Path) -> None:
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert isinstance(raw, OrderedDict)
    assert list(raw) == [k for k, _ in expected_official_keys()]
    for key, value in raw.items():
        want = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        assert value.dtype == want, key


def test_loaded_encoder_holds_the_written_weights(
    encoder: SpeakerEncoder, weights: dict[str, torch.Tensor]
) -> None:
    assert not encoder.training
    state = encoder.state_dict()
    assert set(state) == set(weights)
    for key, value in weights.items():
        assert torch.equal(state[key].cpu(), value), key
        assert state[key].dtype == value.dtype


# ----------------------------------------------------------------- embedding


def test_embedding_shape_determinism_and_batching(encoder: SpeakerEncoder) -> None:
    a, b = _clip(32000, 1), _clip(32000, 2)
    batch = torch.stack([a, b])
    emb = encoder.embed(batch)
    assert emb.shape == (2, EMBED_DIM) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all()
    assert torch.equal(emb, encoder.embed(batch))
    single = encoder.embed(a.unsqueeze(0))
    # batched convolutions round differently; float32 noise through ~50 layers is ~1e-5
    assert (single[0] - emb[0]).abs().max() < 1e-4 * emb.abs().max()
    # different voices give clearly different vectors
    assert (emb[0] - emb[1]).abs().max() > 1e-2 * emb.abs().max()
    # a 1-D clip is a batch of one
    assert torch.equal(encoder.embed(a), single)


def test_embedding_is_the_time_mean_of_the_fused_map(encoder: SpeakerEncoder) -> None:
    wav = _clip(40000, 3).unsqueeze(0)  # 20 000 samples at 16 kHz
    feats = sv_features(wav)
    assert feats.shape == (1, num_frames(20000), 80)
    with torch.inference_mode():
        fmap = encoder.feature_map(feats)
        # 80 fbank rows halve three times, and so do the frames: 123 -> 62 -> 31 -> 16
        assert fmap.shape == (1, 2048, 10, 16)
        expected = fmap.reshape(1, 2048 * 10, 16).mean(-1)
        assert torch.equal(encoder(feats), expected)
    torch.testing.assert_close(encoder.embed(wav), expected, rtol=1e-5, atol=1e-5)


def test_channels_last_layout_matches_the_reference_layout(
    ckpt: Path, encoder: SpeakerEncoder
) -> None:
    exact = load_speaker_encoder(ckpt, channels_last=False)
    assert encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert exact.layer3_ds.weight.is_contiguous()
    wav = _clip(32000, 10).unsqueeze(0)
    a, b = encoder.embed(wav), exact.embed(wav)
    assert (a - b).abs().max() < 1e-4 * b.abs().max()


def test_xvector_head(encoder: SpeakerEncoder) -> None:
    with torch.inference_mode():
        x = encoder.xvector(sv_features(_clip(32000, 4)))
    assert x.shape == (1, 192) and torch.isfinite(x).all()


# --------------------------------------------------------- checkpoint errors


def _save(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def test_missing_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "sv" / OFFICIAL_FILENAME
    with pytest.raises(SpeakerCheckpointError) as err:
        load_speaker_encoder(path)
    assert isinstance(err.value, ValueError)
    assert str(path) in str(err.value) and OFFICIAL_FILENAME in str(err.value)
    assert "not found" in str(err.value)


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(SpeakerCheckpointError, match="not a readable torch checkpoint"):
        load_speaker_encoder(path)


def test_wrapped_state_dict_is_rejected_with_a_hint(
    tmp_path: Path, weights: dict[str, torch.Tensor]
) -> None:
    small = {k: v for k, v in list(weights.items())[:6]}
    path = _save(tmp_path / "x.ckpt", {"state_dict": small, "epoch": 3})
    with pytest.raises(SpeakerCheckpointError, match="state_dict"):
        load_speaker_encoder(path)
    path = _save(tmp_path / "y.ckpt", [1, 2, 3])
    with pytest.raises(SpeakerCheckpointError, match="plain state dict"):
        load_speaker_encoder(path)


def test_other_network_is_rejected(tmp_path: Path, weights: dict[str, torch.Tensor]) -> None:
    # e.g. a SoVITS or 3D-Speaker ERes2Net file: different keys entirely
    path = _save(tmp_path / "x.ckpt", {"enc_p.proj.weight": torch.zeros(2, 2)})
    with pytest.raises(SpeakerCheckpointError, match="missing keys") as err:
        load_speaker_encoder(path)
    assert str(path) in str(err.value)
    # the right network minus its heaviest tensor
    partial = {k: v for k, v in weights.items() if k != "layer3_ds.weight"}
    partial = {k: v for k, v in partial.items() if not k.startswith("layer4")}
    path = _save(tmp_path / "y.ckpt", partial)
    with pytest.raises(SpeakerCheckpointError, match=r"204 missing keys \['layer4.0.conv1.weight"):
        load_speaker_encoder(path)


def test_wrong_shape_is_rejected(tmp_path: Path, weights: dict[str, torch.Tensor]) -> None:
    # An ERes2NetV2 with another width: same keys, other shapes (heavy tensors shrunk).
    bad = dict(weights)
    bad["conv1.weight"] = torch.zeros(32, 1, 3, 3)
    bad["layer3_ds.weight"] = torch.zeros(1)
    bad["seg_1.weight"] = torch.zeros(1)
    path = _save(tmp_path / "x.ckpt", bad)
    with pytest.raises(SpeakerCheckpointError, match="wrong shape") as err:
        load_speaker_encoder(path)
    assert "conv1.weight" in str(err.value)


def test_fp16_file_without_batch_counters_loads_as_float32(
    tmp_path: Path, weights: dict[str, torch.Tensor], encoder: SpeakerEncoder
) -> None:
    half = {k: v.half() for k, v in weights.items() if not k.endswith("num_batches_tracked")}
    model = load_speaker_encoder(_save(tmp_path / "half.ckpt", half))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    wav = _clip(32000, 6).unsqueeze(0)
    a, b = model.embed(wav), encoder.embed(wav)
    assert (a - b).abs().max() < 0.02 * b.abs().max()


def test_non_finite_weights_are_rejected(tmp_path: Path, weights: dict[str, torch.Tensor]) -> None:
    bad = dict(weights)
    bad["bn1.weight"] = torch.full((64,), float("nan"))
    with pytest.raises(SpeakerCheckpointError, match="NaN"):
        load_speaker_encoder(_save(tmp_path / "x.ckpt", bad))


def test_saver_refuses_a_foreign_state_dict(tmp_path: Path) -> None:
    with pytest.raises(SpeakerCheckpointError):
        save_speaker_checkpoint(tmp_path / "x.ckpt", {"a.weight": torch.zeros(1)})


# ------------------------------------------------------------------ resampler


def _sinc_reference(x: np.ndarray) -> np.ndarray:
    """torchaudio's documented 2:1 windowed-sinc, evaluated directly in float64.

    y[j] = sum_i x[i] · 0.495 · sinc(u) · cos²(π u / 12),  u = 0.99 (i/2 - j), |u| <= 6
    (cut-off 0.99 of the new Nyquist, 6 zero crossings, Hann window, zeros outside).
    """
    n = len(x)
    out = np.zeros(math.ceil(n / 2))
    i = np.arange(n)
    for j in range(len(out)):
        u = 0.99 * (i / 2.0 - j)
        mask = np.abs(u) <= 6.0
        h = 0.495 * np.sinc(u[mask]) * np.cos(np.pi * u[mask] / 12.0) ** 2
        out[j] = np.dot(x[mask], h)
    return out


@pytest.mark.parametrize("n", [401, 1000, 1001])
def test_resampler_matches_the_windowed_sinc_formula(n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n) * 0.3
    y = resample_32k_to_16k(torch.from_numpy(x.astype(np.float32)))
    assert y.shape == (math.ceil(n / 2),)
    np.testing.assert_allclose(y.double().numpy(), _sinc_reference(x), atol=2e-6)


def test_resampler_keeps_leading_dims_and_batches_alike() -> None:
    x = torch.randn(2, 3, 999)
    y = resample_32k_to_16k(x)
    assert y.shape == (2, 3, 500)
    torch.testing.assert_close(y[1, 2], resample_32k_to_16k(x[1, 2]), rtol=0, atol=1e-6)


def _tone(freq: float, n: int, sr: int, phase: float = 0.3) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(n) / sr + phase)


@pytest.mark.parametrize("freq", [220.0, 1000.0, 3000.0])
def test_resampler_passband_tone_is_sinc_interpolated(freq: float) -> None:
    """A tone well below 8 kHz must come out as the same tone sampled at 16 kHz.

    (The Hann-windowed 6-crossing filter has a wide transition band: 5 kHz is still
    within 5e-3, 6 kHz is 1.5 % down and 7 kHz 18 %, which is torchaudio's behaviour too.)
    """
    x = torch.from_numpy(_tone(freq, 32000, 32000).astype(np.float32))
    y = resample_32k_to_16k(x).double().numpy()
    truth = _tone(freq, 16000, 16000)
    inner = slice(50, -50)  # away from the zero-padded edges
    assert np.abs(y[inner] - truth[inner]).max() < 1e-3


def test_resampler_removes_content_above_the_new_nyquist() -> None:
    for freq in (10000.0, 12000.0, 15000.0):
        x = torch.from_numpy(_tone(freq, 32000, 32000).astype(np.float32))
        y = resample_32k_to_16k(x).numpy()[50:-50]
        assert np.sqrt(np.mean(y**2)) < 0.01, freq  # input rms is 0.707
    dc = resample_32k_to_16k(torch.ones(4000)).numpy()[50:-50]
    np.testing.assert_allclose(dc, 1.0, atol=2e-3)


# ---------------------------------------------------------------------- fbank


def _fbank_reference(x: np.ndarray) -> np.ndarray:
    """Kaldi compute-fbank-feats (defaults + 80 bins, dither 0, 16 kHz) in float64 numpy."""
    size, shift, nfft = 400, 160, 512
    m = 1 + (len(x) - size) // shift
    frames = np.stack([x[k * shift : k * shift + size] for k in range(m)]).astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    shifted = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - 0.97 * shifted
    n = np.arange(size)
    frames *= (0.5 - 0.5 * np.cos(2 * np.pi * n / (size - 1))) ** 0.85
    power = np.abs(np.fft.rfft(frames, n=nfft, axis=1)) ** 2

    def mel(f: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    edges = mel(20.0) + np.arange(82) * (mel(8000.0) - mel(20.0)) / 81
    fft_mel = mel(np.arange(nfft // 2) * 16000 / nfft)
    bank = np.zeros((80, nfft // 2 + 1))
    for b in range(80):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        up = (fft_mel - lo) / (mid - lo)
        down = (hi - fft_mel) / (hi - mid)
        bank[b, : nfft // 2] = np.maximum(0.0, np.minimum(up, down))
    energies = power @ bank.T
    return np.log(np.maximum(energies, np.finfo(np.float32).eps))


def test_fbank_matches_an_independent_kaldi_recipe() -> None:
    x = _clip(3200 * 2, 8, sr=16000).numpy() + 0.01
    feats = kaldi_fbank(torch.from_numpy(x), num_mel_bins=80)
    assert feats.shape == (1 + (len(x) - 400) // 160, 80) and feats.dtype == torch.float32
    np.testing.assert_allclose(feats.double().numpy(), _fbank_reference(x), atol=2e-3, rtol=0)


def test_fbank_uses_unscaled_floats() -> None:
    """No x32768: scaling the input by k shifts every log energy by exactly 2 ln k."""
    x = _clip(4000, 9, sr=16000)
    diff = kaldi_fbank(x * 4.0) - kaldi_fbank(x)
    np.testing.assert_allclose(diff.numpy(), 2 * math.log(4.0), atol=1e-4)


@pytest.mark.parametrize(("n", "frames"), [(400, 1), (559, 1), (560, 2), (16000, 98)])
def test_fbank_frame_count(n: int, frames: int) -> None:
    assert num_frames(n) == frames
    assert kaldi_fbank(torch.randn(n) * 0.1).shape == (frames, 80)


def test_fbank_rejects_clips_shorter_than_one_frame() -> None:
    with pytest.raises(ValueError, match="too short"):
        kaldi_fbank(torch.zeros(399))
    with pytest.raises(ValueError, match="too short"):
        sv_features(torch.zeros(1, 700))  # 350 samples at 16 kHz


def test_mel_filterbank_shape() -> None:
    bank = mel_filterbank(80, 512, 16000.0, 20.0, 0.0)
    assert bank.shape == (80, 257)
    assert torch.all(bank[:, -1] == 0) and torch.all(bank >= 0) and torch.all(bank <= 1)
    assert torch.all(bank.sum(dim=1) > 0)  # no empty bin at 80 bins / 512-point FFT


def test_silence_is_floored_not_minus_infinity() -> None:
    feats = kaldi_fbank(torch.zeros(1600))
    assert torch.allclose(feats, torch.tensor(math.log(torch.finfo(torch.float32).eps)))
