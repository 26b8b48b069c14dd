"""ONNX Runtime backend against the goldens and torch eager, full-size formula-weight models.

Exports are slow (GPT ~40 s, SoVITS ~50 s per model on 2 cores), so they are kept in
pytest's cache folder keyed by the weights and the graph code: the first run exports,
later runs only re-verify the files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kiosk_build.export_onnx import (
    GRAPH_FILES,
    code_fingerprint,
    export_gpt,
    export_sovits,
    file_sha256,
    weights_sha256,
)

from devtools.compat.golden_set import ModelBank
from engines.backends.onnxruntime_backend import (
    OnnxRuntimeBackend,
    OrtGPTRuntime,
    OrtSoVITSRuntime,
    default_cache_dir,
    physical_cores,
)
from engines.gpt.decoding import generate
from engines.gpt.runtime import TorchSession
from engines.gpt.sampling import SamplingParams
from engines.streaming import ChunkVocoder, StreamSettings

COMPAT = Path(__file__).resolve().parent / "golden"
SEED = 1
GOLDEN_PARAMS = SamplingParams(top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.35)
#: ORT vs torch/golden logits: observed <= 3.1e-6 (same float32 algorithms, other order).
ATOL_LOGITS = 1e-3
#: 8-bit-weight decode vs golden logits (std ~1): the bound the int8 graph must keep.
ATOL_INT8 = 0.15
#: ORT vs golden audio: observed <= 1.5e-6; the README's same-algorithm tolerance.
ATOL_AUDIO = 1e-4

pytestmark = [pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def bank() -> ModelBank:
    return ModelBank()


@pytest.fixture(scope="module")
def export_root(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("onnx-exports"))


def _cached(root: Path, family: str, version: str, model: torch.nn.Module, export: Any) -> Path:
    """Export once per (weights, graph code); a `done` file lists the graphs' hashes."""
    key = f"{family}-{version}-{weights_sha256(model)[:12]}-{code_fingerprint()[:12]}"
    folder = root / key
    done = folder / "done"
    names = [n for n in GRAPH_FILES if n.startswith(family)]
    if done.is_file():
        recorded = dict(line.split(" ", 1) for line in done.read_text().splitlines())
        if all(file_sha256(folder / GRAPH_FILES[n]) == recorded.get(n) for n in names):
            return folder
    export(model, folder)
    done.write_text("\n".join(f"{n} {file_sha256(folder / GRAPH_FILES[n])}" for n in names))
    return folder


def _gpt_runtimes(bank: ModelBank, root: Path, decode: str) -> dict[str, OrtGPTRuntime]:
    runtimes = {}
    for version in ("v1", "v2"):
        model = bank.gpt(version, SEED)
        folder = _cached(root, "gpt", version, model, export_gpt)
        runtimes[version] = OrtGPTRuntime(
            folder / GRAPH_FILES["gpt_prefill"],
            folder / GRAPH_FILES[decode],
            model.config,
            intra_op_threads=1,
        )
    return runtimes


@pytest.fixture(scope="module")
def gpt_runtimes(bank: ModelBank, export_root: Path) -> dict[str, OrtGPTRuntime]:
    return _gpt_runtimes(bank, export_root, "gpt_decode")


@pytest.fixture(scope="module")
def int8_runtimes(bank: ModelBank, export_root: Path) -> dict[str, OrtGPTRuntime]:
    return _gpt_runtimes(bank, export_root, "gpt_decode_int8")


@pytest.fixture(scope="module")
def sovits_runtimes(bank: ModelBank, export_root: Path) -> dict[str, OrtSoVITSRuntime]:
    runtimes = {}
    for version in ("v2", "v2ProPlus"):
        model = bank.sovits(version, SEED)
        folder = _cached(export_root, "sovits", version, model, export_sovits)
        runtimes[version] = OrtSoVITSRuntime(
            folder / GRAPH_FILES["sovits_encoder"],
            folder / GRAPH_FILES["sovits_flow_vocoder"],
            intra_op_threads=1,
        )
    return runtimes


def _golden(name: str) -> dict[str, np.ndarray]:
    with np.load(COMPAT / name) as data:
        return {k: data[k] for k in data.files}


# ------------------------------------------------------------------------------ GPT
@pytest.mark.parametrize("case", ["main", "eos"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_greedy_tokens_match_goldens(
    version: str, case: str, gpt_runtimes: dict[str, OrtGPTRuntime]
) -> None:
    golden = _golden(f"gpt_{version}{'' if case == 'main' else '_eos'}.npz")
    result = generate(
        gpt_runtimes[version],
        torch.from_numpy(golden["all_phone_ids"]),
        torch.from_numpy(golden["bert_feature"]),
        torch.from_numpy(golden["prompt_semantic"]),
        GOLDEN_PARAMS,
        torch.Generator().manual_seed(0),
        early_stop_num=39,
        keep_diagnostics=True,
    )
    np.testing.assert_array_equal(result.tokens.numpy(), golden["tokens"])
    assert result.stopped_by_eos == bool(golden["stopped_by_eos"])
    assert result.logits is not None
    diff = np.abs(result.logits.numpy() - golden["logits_all"]).max()
    assert diff <= ATOL_LOGITS, f"logits differ from the golden by {diff:.3g}"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_int8_logits_teacher_forced_on_goldens(
    version: str, int8_runtimes: dict[str, OrtGPTRuntime]
) -> None:
    """8-bit weights move each golden step's logits by < ATOL_INT8, and keep its argmax
    wherever the golden's top two logits are further apart than twice that."""
    golden = _golden(f"gpt_{version}.npz")
    phones = torch.from_numpy(golden["all_phone_ids"])[None]
    prompt = torch.from_numpy(golden["prompt_semantic"])[None]
    session = int8_runtimes[version].session(phones.shape[1] + prompt.shape[1] + 40)
    with torch.inference_mode():
        rows = [session.prefill(phones, torch.from_numpy(golden["bert_feature"])[None], prompt)]
        for step, token in enumerate(golden["tokens"][:-1]):
            slot = phones.shape[1] + prompt.shape[1] + step
            rows.append(session.step(int(token), prompt.shape[1] + step, slot))
    got = torch.cat(rows).numpy()
    want = golden["logits_all"]
    assert 1e-4 < np.abs(got - want).max() <= ATOL_INT8
    top2 = np.sort(want, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * ATOL_INT8
    assert clear.sum() > 10
    np.testing.assert_array_equal(got.argmax(-1)[clear], want.argmax(-1)[clear])


def test_int8_is_rejected_for_the_formula_weights(bank: ModelBank, export_root: Path) -> None:
    """Formula weights have near-tied logits (median top-2 gap 0.18), so 8-bit weights
    change a greedy token within 48 steps: the build's check must say no, which keeps
    the "auto" backend on FP32 and on the goldens."""
    from kiosk_build.quantize_int8 import validate_int8

    model = bank.gpt("v2", SEED)
    folder = _cached(export_root, "gpt", "v2", model, export_gpt)
    verdict = validate_int8(
        model, folder / GRAPH_FILES["gpt_prefill"], folder / GRAPH_FILES["gpt_decode_int8"]
    )
    assert verdict["passed"] is False
    assert "tokens differ from step" in verdict["detail"]


def test_logits_match_eager_step_by_step(
    bank: ModelBank, gpt_runtimes: dict[str, OrtGPTRuntime]
) -> None:
    """Prefill and decode steps against torch eager, on cache slots far from the prefix."""
    golden = _golden("gpt_v2.npz")
    phones = torch.from_numpy(golden["all_phone_ids"])[None]
    bert = torch.from_numpy(golden["bert_feature"])[None]
    prompt = torch.from_numpy(golden["prompt_semantic"])[None]
    eager = TorchSession(bank.gpt("v2", SEED), 120)
    ort_session = gpt_runtimes["v2"].session(120)
    with torch.inference_mode():
        pairs = [(eager.prefill(phones, bert, prompt), ort_session.prefill(phones, bert, prompt))]
        for step, token in enumerate(golden["tokens"][:6]):
            position, slot = 40 + step, 90 + step
            pairs.append(
                (
                    eager.step(int(token), position, slot),
                    ort_session.step(int(token), position, slot),
                )
            )
    for want, got in pairs:
        assert got.shape == (1, 1025)
        assert float((want - got).abs().max()) <= ATOL_LOGITS


def test_static_cache_is_not_copied(gpt_runtimes: dict[str, OrtGPTRuntime]) -> None:
    """Steps write one row into the same cache buffers the binding points at."""
    session = gpt_runtimes["v2"].session(64)
    pointer = session.k_cache.data_ptr()
    session.prefill(
        torch.zeros(1, 4, dtype=torch.long),
        torch.zeros(1, 1024, 4),
        torch.zeros(1, 3, dtype=torch.long),
    )
    session.step(5, 3, 7)
    assert session.k_cache.data_ptr() == pointer
    assert session.k_cache[:, :, :, 7].abs().sum() > 0
    assert session.k_cache[:, :, :, 8:].abs().sum() == 0
    with pytest.raises(ValueError, match="slot"):
        session.step(5, 4, 64)


def test_cache_grows_in_buckets_and_keeps_what_it_holds(
    bank: ModelBank, gpt_runtimes: dict[str, OrtGPTRuntime]
) -> None:
    """A session with room for the 1 500-token cap starts at one bucket and grows by
    copying (rebinding the graph) when a step reaches the end, logits unchanged."""
    golden = _golden("gpt_v2.npz")
    phones = torch.from_numpy(golden["all_phone_ids"])[None]
    bert = torch.from_numpy(golden["bert_feature"])[None]
    prompt = torch.from_numpy(golden["prompt_semantic"])[None]
    prefix = phones.shape[1] + prompt.shape[1]
    assert prefix < 126
    eager = TorchSession(bank.gpt("v2", SEED), prefix + 1500)
    ort_session = gpt_runtimes["v2"].session(prefix + 1500)
    assert ort_session.k_cache.shape[3] == 128
    with torch.inference_mode():
        pairs = [(eager.prefill(phones, bert, prompt), ort_session.prefill(phones, bert, prompt))]
        for step, token in enumerate(golden["tokens"][:4]):
            slot = 126 + step  # the third step needs slot 128: the next bucket
            pairs.append((eager.step(int(token), 40 + step, slot),
                          ort_session.step(int(token), 40 + step, slot)))  # fmt: skip
    assert ort_session.k_cache.shape[3] == 256
    assert ort_session.k_cache[:, :, :, 126:130].abs().sum(dim=(0, 1, 2, 4)).min() > 0
    for want, got in pairs:
        assert float((want - got).abs().max()) <= ATOL_LOGITS


# ------------------------------------------------------------------------------ SoVITS
@pytest.mark.parametrize("version", ["v2", "v2ProPlus"])
def test_audio_matches_golden(
    version: str, bank: ModelBank, sovits_runtimes: dict[str, OrtSoVITSRuntime]
) -> None:
    golden = _golden(f"sovits_{version}.npz")
    model = bank.sovits(version, SEED)
    sv = torch.from_numpy(golden["sv_emb"]) if "sv_emb" in golden else None
    with torch.no_grad():
        timbre = model.timbre(torch.from_numpy(golden["ref_spec"]), sv)
    codes, text = torch.from_numpy(golden["codes"]), torch.from_numpy(golden["text_ids"])
    for speed, key in ((1.0, "audio_speed1"), (1.25, "audio_speed1_25")):
        audio = sovits_runtimes[version].decode(codes, text, timbre, speed, noise_scale=0.0)
        assert audio.shape == (1, 1, golden[key].shape[0])
        diff = np.abs(audio[0, 0].numpy() - golden[key]).max()
        assert diff <= ATOL_AUDIO, f"speed {speed}: audio differs by {diff:.3g}"


def test_noise_drawn_like_eager(
    bank: ModelBank, sovits_runtimes: dict[str, OrtSoVITSRuntime]
) -> None:
    """noise_scale > 0: same draws from the same generator, same audio, same RNG state after."""
    golden = _golden("sovits_v2.npz")
    model = bank.sovits("v2", SEED)
    with torch.no_grad():
        timbre = model.timbre(torch.from_numpy(golden["ref_spec"]))
        codes = torch.from_numpy(golden["codes"])[..., :12]
        text = torch.from_numpy(golden["text_ids"])
        gens = [torch.Generator().manual_seed(11) for _ in range(2)]
        want = model.decode(codes, text, timbre, 1.1, noise_scale=0.6, generator=gens[0])
    got = sovits_runtimes["v2"].decode(codes, text, timbre, 1.1, noise_scale=0.6, generator=gens[1])
    assert float((want - got).abs().max()) <= ATOL_AUDIO
    assert torch.equal(torch.randn(3, generator=gens[0]), torch.randn(3, generator=gens[1]))


def test_streamed_windows_match_eager(
    bank: ModelBank, sovits_runtimes: dict[str, OrtSoVITSRuntime]
) -> None:
    """The chunked vocoder gives the same chunks on ONNX Runtime as on torch eager."""
    golden = _golden("sovits_v2.npz")
    model = bank.sovits("v2", SEED)
    with torch.no_grad():
        timbre = model.timbre(torch.from_numpy(golden["ref_spec"]))
    tokens = golden["codes"][0, 0, :30].tolist()
    text = torch.from_numpy(golden["text_ids"])
    settings = StreamSettings(first_chunk_tokens=8, chunk_tokens=10)
    chunks = []
    for sovits in (model, sovits_runtimes["v2"]):
        vocoder = ChunkVocoder(
            sovits, text, timbre, 0.5, torch.Generator().manual_seed(2), settings
        )
        with torch.no_grad():
            chunks.append(
                [vocoder.push(tokens[:n]) for n in (8, 18)] + [vocoder.push(tokens, final=True)]
            )
    for eager, ort in zip(*chunks, strict=True):
        assert eager.shape == ort.shape and eager.size > 0
        assert float(np.abs(eager - ort).max()) <= ATOL_AUDIO


# ------------------------------------------------------------------------------ backend
def test_availability_and_threads() -> None:
    ok, why = OnnxRuntimeBackend().availability()
    assert ok and "CPUExecutionProvider" in why
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


def test_export_cache_follows_the_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service sets XDG_CACHE_HOME to its CacheDirectory=; exports belong there."""
    monkeypatch.delenv("KIOSK_ONNX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache" / "kiosk" / "onnx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "kiosk" / "onnx"
    monkeypatch.setenv("KIOSK_ONNX_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
