"""Official-format files written from formula weights load back into the same models.

The files are full-size and float16, as the trainer writes them, with and
without `info`, header-marked for v2Pro/v2ProPlus.  Loading them must give
exactly the outputs of a model holding the same float16-rounded weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from appliance.cli import main
from devtools.checkpoint_writer import save_gpt_checkpoint, save_sovits_checkpoint
from devtools.formula_weights import formula_state_dict
from engines.checkpoint_reader import (
    CheckpointError,
    load_gpt_checkpoint,
    load_sovits_checkpoint,
)
from engines.gpt.config import GPTConfig
from engines.gpt.kv_cache import KVCache
from engines.gpt.model import Text2SemanticModel
from engines.sovits.spectrogram import reference_spectrogram
from engines.sovits.synthesizer import SoVITSModel
from engines.voice_models import load_voice_models

SEED = 7


def _fp16_rounded(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half().float() for k, v in weights.items()}


def _gpt_weights(version: str) -> dict[str, torch.Tensor]:
    shapes = {
        k: v.shape
        for k, v in Text2SemanticModel(GPTConfig.for_version(version)).state_dict().items()
    }
    return formula_state_dict(shapes, SEED)


def _sovits_weights(version: str) -> dict[str, torch.Tensor]:
    shapes = {k: v.shape for k, v in SoVITSModel.for_version(version).state_dict().items()}
    return formula_state_dict(shapes, SEED)


def _gpt_config(version: str) -> dict:
    return GPTConfig.for_version(version).to_official()


def _gpt_logits(model: Text2SemanticModel, n_sym: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    phones = torch.randint(0, n_sym, (1, 12), generator=gen)
    bert = torch.randn(1, 1024, 12, generator=gen)
    prompt = torch.randint(0, 1024, (1, 9), generator=gen)
    cache = KVCache.allocate(model.config, batch_size=1, max_len=32)
    with torch.inference_mode():
        first = model.prefill(phones, bert, prompt, cache)
        second = model.decode_step(
            torch.tensor([[5]]), torch.tensor([9]), cache, torch.tensor([21])
        )
    return torch.cat([first, second])


def _sovits_audio(model: SoVITSModel, n_sym: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(4)
    wav = 0.3 * torch.randn(1, 32000 * 3, generator=gen).clamp(-3, 3) / 3
    codes = torch.randint(0, 1024, (1, 1, 8), generator=gen)
    text = torch.randint(0, n_sym, (1, 10), generator=gen)
    sv = torch.randn(1, 20480, generator=gen) if model.cfg.uses_sv_embedding else None
    with torch.inference_mode():
        timbre = model.timbre(reference_spectrogram(wav), sv)
        return model.decode(codes, text, timbre, noise_scale=0.0)


@pytest.mark.parametrize(("version", "info"), [("v1", "GPT-e8"), ("v2", None)])
def test_gpt_file_roundtrip(tmp_path: Path, version: str, info: str | None) -> None:
    weights = _gpt_weights(version)
    path = save_gpt_checkpoint(
        tmp_path / f"voice-{version}.ckpt", weights, _gpt_config(version), info
    )
    ckpt = load_gpt_checkpoint(path)
    assert ckpt.version == version and ckpt.info == info
    assert all(t.dtype == torch.float32 for t in ckpt.state_dict.values())

    expected = Text2SemanticModel(GPTConfig.for_version(version)).eval()
    expected.load_official_state_dict(_fp16_rounded(weights))
    loaded = Text2SemanticModel(GPTConfig.from_official(ckpt.config)).eval()
    loaded.load_official_state_dict(ckpt.state_dict)
    n_sym = 322 if version == "v1" else 732
    assert torch.equal(_gpt_logits(loaded, n_sym), _gpt_logits(expected, n_sym))


@pytest.mark.parametrize(
    ("version", "mark", "info"),
    [
        ("v1", b"PK", "8epoch_96iteration"),
        ("v2", b"PK", None),
        ("v2Pro", b"05", "3epoch_30iteration"),
        ("v2ProPlus", b"06", None),
    ],
)
def test_sovits_file_roundtrip(tmp_path: Path, version: str, mark: bytes, info: str | None) -> None:
    weights = _sovits_weights(version)
    weights_with_enc_q = {**weights, "enc_q.proj.bias": torch.zeros(384)}
    path = save_sovits_checkpoint(
        tmp_path / f"voice-{version}.pth",
        weights_with_enc_q,
        {"model": {"version": version}},
        version,
        info,
    )
    assert path.read_bytes()[:2] == mark
    ckpt = load_sovits_checkpoint(path)
    assert ckpt.version == version and ckpt.info == info
    assert not any(k.startswith("enc_q") for k in ckpt.state_dict)

    expected = SoVITSModel.for_version(version).eval()
    expected.load_official_state_dict(_fp16_rounded(weights))
    loaded = SoVITSModel.for_version(version).eval()
    loaded.load_official_state_dict(ckpt.state_dict)
    n_sym = 322 if version == "v1" else 732
    assert torch.equal(_sovits_audio(loaded, n_sym), _sovits_audio(expected, n_sym))


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A GPT v1, a GPT v2 and a SoVITS v2 file, for the pairing checks."""
    folder = tmp_path_factory.mktemp("pair")
    return {
        "gpt_v1": save_gpt_checkpoint(folder / "g1.ckpt", _gpt_weights("v1"), _gpt_config("v1")),
        "gpt_v2": save_gpt_checkpoint(folder / "g2.ckpt", _gpt_weights("v2"), _gpt_config("v2")),
        "sovits_v2": save_sovits_checkpoint(folder / "s2.pth", _sovits_weights("v2"), {}, "v2"),
    }


def test_matching_pair_loads(small_pair: dict[str, Path]) -> None:
    voice = load_voice_models(small_pair["gpt_v2"], small_pair["sovits_v2"])
    assert (voice.gpt_version, voice.sovits_version, voice.symbols_version) == ("v2", "v2", "v2")
    assert not voice.gpt.training and not voice.sovits.training


def test_mismatched_pair_is_refused(small_pair: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match=r"GPT v1 model but .* SoVITS v2 model"):
        load_voice_models(small_pair["gpt_v1"], small_pair["sovits_v2"])


def test_swapped_files_are_named(small_pair: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match=r"SoVITS .* file, but a GPT .* was expected"):
        load_voice_models(small_pair["sovits_v2"], small_pair["gpt_v2"])


def test_weights_of_the_wrong_shape(tmp_path: Path) -> None:
    weights = _sovits_weights("v2")
    weights["flow.flows.0.pre.weight"] = torch.zeros(3, 3, 1)
    path = save_sovits_checkpoint(tmp_path / "broken.pth", weights, {}, "v2")
    gpt = save_gpt_checkpoint(tmp_path / "g.ckpt", _gpt_weights("v2"), _gpt_config("v2"))
    with pytest.raises(CheckpointError, match="do not fit a GPT-SoVITS v2 SoVITS"):
        load_voice_models(gpt, path)


def test_inspect_tells_what_a_file_is(small_pair: dict[str, Path], capsys, tmp_path) -> None:
    assert main(["inspect", str(small_pair["gpt_v1"]), str(small_pair["sovits_v2"])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "GPT v1, 295 tensors" in out[0] and "SOVITS v2, 673 tensors" in out[1]
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    assert main(["inspect", str(bad)]) == 2
    assert "not a GPT-SoVITS checkpoint" in capsys.readouterr().err
