"""SoVITS synthesizer against the reference implementation's golden outputs.

The goldens (`tests/golden/sovits_<ver>.npz`) were made
by the official code with formula weights (seed 1); the model here loads the
same formula weights from its own key list, so every array must agree within
float32 rounding. Tests that need the goldens skip when the folder is absent.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from devtools.formula_weights import formula_state_dict
from engines.sovits import (
    DecodeResult,
    SoVITSConfig,
    SoVITSModel,
    Timbre,
    normalise_reference_clip,
    reference_spectrogram,
)
from engines.sovits.weight_norm import WeightNormConvTranspose1d, compose_weight

COMPAT = Path(__file__).resolve().parent / "golden"
VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")
PRO = {"v2Pro", "v2ProPlus"}
SEED = 1
ATOL = 1e-4


@dataclass
class Case:
    """One version's model with formula weights, its golden arrays and our outputs."""

    version: str
    model: SoVITSModel
    golden: dict[str, np.ndarray]
    timbre: Timbre
    speed1: DecodeResult
    speed125: DecodeResult

    def tensor(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.golden[name])

    def sv_emb(self) -> torch.Tensor | None:
        return self.tensor("sv_emb") if self.version in PRO else None


def official_shapes(version: str) -> list[tuple[str, list[int]]]:
    data = json.loads((COMPAT / "keys_shapes.json").read_text())
    return [(k["key"], list(k["shape"])) for k in data["sovits"][version]["keys"]]


@pytest.fixture(scope="module", params=VERSIONS)
def case(request: pytest.FixtureRequest) -> Case:
    version = request.param
    model = SoVITSModel.for_version(version).eval()
    own = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert own == official_shapes(version)
    model.load_state_dict(formula_state_dict(dict(own), SEED), strict=True)
    with np.load(COMPAT / f"sovits_{version}.npz") as npz:
        golden = {k: npz[k] for k in npz.files}
    sv = torch.from_numpy(golden["sv_emb"]) if version in PRO else None
    codes = torch.from_numpy(golden["codes"])
    text_ids = torch.from_numpy(golden["text_ids"])
    with torch.no_grad():
        timbre = model.timbre(torch.from_numpy(golden["ref_spec"]), sv)
        speed1 = model.decode_with_intermediates(codes, text_ids, timbre, 1.0, noise_scale=0.0)
        speed125 = model.decode_with_intermediates(codes, text_ids, timbre, 1.25, noise_scale=0.0)
    return Case(version, model, golden, timbre, speed1, speed125)


def assert_close(actual: torch.Tensor, expected: np.ndarray, atol: float = ATOL) -> None:
    assert tuple(actual.shape) == expected.shape
    diff = float(np.max(np.abs(actual.detach().numpy() - expected)))
    assert diff <= atol, f"max abs diff {diff:.3g} > {atol}"


# ---------------------------------------------------------------- goldens


def test_reference_spectrogram(case: Case) -> None:
    with torch.no_grad():
        spec = reference_spectrogram(case.tensor("ref_wav")[None])
    np.testing.assert_allclose(spec.numpy(), case.golden["ref_spec"], rtol=1e-5, atol=1e-4)


def test_timbre(case: Case) -> None:
    assert_close(case.timbre.ge_ref, case.golden["ge_ref"])
    assert_close(case.timbre.ge, case.golden["ge"])
    if case.version in PRO:
        assert case.timbre.sv_proj is not None
        assert_close(case.timbre.sv_proj, case.golden["sv_proj"])
        assert_close(case.timbre.ge_text, case.golden["ge512"])
    else:
        assert case.timbre.ge_text is case.timbre.ge


def test_prior_and_flow(case: Case) -> None:
    assert_close(case.speed1.m_p, case.golden["m_p_speed1"])
    assert_close(case.speed1.logs_p, case.golden["logs_p_speed1"])
    assert_close(case.speed1.z, case.golden["z_speed1"])
    # noise_scale 0: the sampled prior is the mean itself.
    assert torch.equal(case.speed1.z_p, case.speed1.m_p)


def test_audio(case: Case) -> None:
    assert_close(case.speed1.audio[0, 0], case.golden["audio_speed1"])
    assert_close(case.speed125.audio[0, 0], case.golden["audio_speed1_25"])
    assert_close(case.speed125.y_mask, case.golden["y_mask_speed1_25"], atol=0.0)
    assert case.speed1.audio.shape[-1] == case.golden["codes"].shape[-1] * 1280


def test_extract_latent(case: Case) -> None:
    with torch.no_grad():
        codes = case.model.extract_latent(case.tensor("ssl"))
    assert codes.dtype == torch.int64
    assert np.array_equal(codes.numpy(), case.golden["latent_codes"])


def test_noise_uses_generator(case: Case) -> None:
    m_p, logs_p = case.speed1.m_p, case.speed1.logs_p
    draws = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(1234)
        draws.append(case.model.sample_prior(m_p, logs_p, 0.5, gen))
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], m_p)
    eps = torch.randn(m_p.shape, generator=torch.Generator().manual_seed(1234))
    assert torch.equal(case.model.sample_prior(m_p, logs_p, 0.5, noise=eps), draws[0])


def test_decode_with_noise(case: Case) -> None:
    # 10 codes keep it cheap; this exercises the public `decode` with its RNG path.
    codes, text_ids = case.tensor("codes")[..., :10], case.tensor("text_ids")
    with torch.no_grad():
        runs = [
            case.model.decode(
                codes, text_ids, case.timbre, generator=torch.Generator().manual_seed(7)
            )
            for _ in range(2)
        ]
        quiet = case.model.decode(codes, text_ids, case.timbre, noise_scale=0.0)
    assert runs[0].shape == (1, 1, 10 * 1280)
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], quiet)
    assert torch.isfinite(runs[0]).all()


def test_fold_weight_norm_keeps_audio(case: Case) -> None:
    folded = copy.deepcopy(case.model)
    assert folded.fold_weight_norm() > 0
    keys = folded.state_dict().keys()
    assert not any(k.endswith(("weight_g", "weight_v")) for k in keys)
    assert folded.fold_weight_norm() == 0
    with torch.no_grad():
        audio = folded.decode(
            case.tensor("codes"), case.tensor("text_ids"), case.timbre, noise_scale=0.0
        )
    assert_close(audio[0, 0], case.golden["audio_speed1"])


def test_pro_requires_sv_embedding(case: Case) -> None:
    spec = case.tensor("ref_spec")
    if case.version in PRO:
        with pytest.raises(ValueError, match="sv_emb"):
            case.model.timbre(spec)
    else:
        with torch.no_grad():
            assert torch.equal(case.model.timbre(spec).ge, case.timbre.ge)


def test_average_of_one_timbre_is_identity(case: Case) -> None:
    with torch.no_grad():
        avg = case.model.average_timbre([case.timbre])
    assert torch.equal(avg.ge, case.timbre.ge)
    assert torch.allclose(avg.ge_text, case.timbre.ge_text, atol=1e-6)


def test_load_official_state_dict_drops_enc_q(case: Case) -> None:
    before = case.model.state_dict()
    # float64 round-trips float32 exactly, so the cast can be checked without changing weights.
    state = {k: v.double() for k, v in before.items()}
    state["enc_q.proj.bias"] = torch.zeros(384, dtype=torch.float64)
    case.model.load_official_state_dict(state)
    after = case.model.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], before[k]) for k in before)


# ---------------------------------------------------------------- no goldens needed


@pytest.mark.parametrize("version", VERSIONS)
def test_config_for_version(version: str) -> None:
    cfg = SoVITSConfig.for_version(version)
    assert cfg.version == version
    assert cfg.n_symbols == (322 if version == "v1" else 732)
    assert cfg.gin_channels == (1024 if version in PRO else 512)
    assert cfg.ref_bins == (1025 if version == "v1" else 704)
    assert cfg.uses_sv_embedding == (version in PRO)
    assert cfg.samples_per_code == 1280


def test_unknown_version() -> None:
    with pytest.raises(ValueError, match="v3"):
        SoVITSConfig.for_version("v3")


def test_spectrogram_frame_count() -> None:
    wav = torch.zeros(2, 32000)
    spec = reference_spectrogram(wav)
    assert spec.shape == (2, 1025, (32000 + 2 * 704 - 2048) // 640 + 1)
    assert torch.allclose(spec, torch.full_like(spec, 1e-4))


def test_normalise_reference_clip() -> None:
    stereo = torch.tensor([[0.5, -4.0], [0.5, 0.0]])
    mono = normalise_reference_clip(stereo)  # mean -> [0.5, -2.0], peak 2 -> divide by 2
    assert torch.allclose(mono, torch.tensor([0.25, -1.0]))
    loud = normalise_reference_clip(torch.tensor([3.0, -1.0]))  # divided by min(2, 3) = 2
    assert torch.allclose(loud, torch.tensor([1.5, -0.5]))
    quiet = torch.tensor([0.9, -0.3])
    assert torch.equal(normalise_reference_clip(quiet), quiet)


def test_transposed_weight_norm_is_per_input_channel() -> None:
    conv = WeightNormConvTranspose1d(4, 3, kernel_size=4, stride=2, padding=1)
    assert conv.weight_g.shape == (4, 1, 1)
    assert conv.weight_v.shape == (4, 3, 4)
    weight = compose_weight(conv.weight_g, conv.weight_v)
    norms = weight.flatten(1).norm(dim=1)
    assert torch.allclose(norms, conv.weight_g.flatten(), atol=1e-6)
