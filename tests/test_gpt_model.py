"""GPT stage: official key layout, golden parity (v1/v2), KV cache, sampling, stop rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from devtools.formula_weights import formula_state_dict
from engines.gpt import (
    EOS_SUPPRESSED_STEPS,
    GPTConfig,
    KVCache,
    SamplingParams,
    Text2SemanticModel,
    generate,
    sample_next,
)
from engines.gpt.sampling import apply_repetition_penalty

COMPAT = Path(__file__).resolve().parent / "golden"
VERSIONS = ("v1", "v2")
CASES = ("main", "eos")
ATOL = 1e-4
# Settings of the golden call (README section 4, Part B).
GOLDEN_PARAMS = SamplingParams(top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.35)
GOLDEN_EARLY_STOP = 39


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def official_keys() -> dict[str, Any]:
    return json.loads((COMPAT / "keys_shapes.json").read_text())["gpt"]


@pytest.fixture(scope="module")
def models(official_keys: dict[str, Any]) -> dict[str, Text2SemanticModel]:
    """Formula-weight (seed 1) models, one per version, built once."""
    built = {}
    for version in VERSIONS:
        shapes = {k["key"]: k["shape"] for k in official_keys[version]["keys"]}
        model = Text2SemanticModel(GPTConfig.for_version(version)).eval()
        model.load_official_state_dict(formula_state_dict(shapes, 1))
        built[version] = model
    return built


@pytest.fixture(scope="module")
def golden_runs(models: dict[str, Text2SemanticModel]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each golden file with our greedy decode of its inputs, computed once."""
    runs = {}
    for version in VERSIONS:
        for case in CASES:
            suffix = "" if case == "main" else f"_{case}"
            golden = dict(np.load(COMPAT / f"gpt_{version}{suffix}.npz"))
            result = generate(
                models[version],
                torch.from_numpy(golden["all_phone_ids"]),
                torch.from_numpy(golden["bert_feature"]),
                torch.from_numpy(golden["prompt_semantic"]),
                GOLDEN_PARAMS,
                torch.Generator().manual_seed(0),
                early_stop_num=GOLDEN_EARLY_STOP,
                keep_diagnostics=True,
            )
            runs[(version, case)] = {"golden": golden, "result": result}
    return runs


def _max_diff(got: torch.Tensor | np.ndarray, want: np.ndarray) -> float:
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else got
    assert got.shape == want.shape
    return float(np.abs(got.astype(np.float64) - want).max())


# --------------------------------------------------------------------- config
def test_config_versions_and_official_dict() -> None:
    assert GPTConfig.for_version("v1").phoneme_vocab_size == 512
    assert GPTConfig.for_version("v2").phoneme_vocab_size == 732
    cfg = GPTConfig.for_version("v2")
    assert (cfg.hidden_dim, cfg.num_heads, cfg.num_layers, cfg.ffn_dim) == (512, 16, 24, 2048)
    assert (cfg.vocab_size, cfg.eos_id, cfg.head_dim, cfg.early_stop_num) == (1025, 1024, 32, 2700)
    with pytest.raises(ValueError, match="unknown GPT version"):
        GPTConfig.for_version("v3")
    with pytest.raises(ValueError, match="missing"):
        GPTConfig.from_official({"data": {}})
    with pytest.raises(ValueError, match="eos_id"):
        GPTConfig(eos_id=3)


@pytest.mark.parametrize("version", VERSIONS)
def test_from_official_matches_stock_config(version: str, official_keys: dict[str, Any]) -> None:
    official = {"model": official_keys[version]["model_config"], "data": {"max_sec": 54}}
    assert GPTConfig.from_official(official) == GPTConfig.for_version(version)


# ----------------------------------------------------------------- key layout
@pytest.mark.parametrize("version", VERSIONS)
def test_state_dict_matches_official_keys(version: str, official_keys: dict[str, Any]) -> None:
    keys = official_keys[version]["keys"]
    want = {k["key"].removeprefix("model."): tuple(k["shape"]) for k in keys}
    got = Text2SemanticModel(GPTConfig.for_version(version)).state_dict()
    assert len(got) == 295
    assert list(got) == list(want)  # same order as the official checkpoint, too
    assert {k: tuple(v.shape) for k, v in got.items()} == want
    assert all(v.dtype == torch.float32 for v in got.values())


def test_load_accepts_prefixed_and_plain_keys() -> None:
    cfg = _tiny_config()
    source = Text2SemanticModel(cfg)
    prefixed = {f"model.{k}": v.half() for k, v in source.state_dict().items()}
    target = Text2SemanticModel(cfg)
    target.load_official_state_dict(prefixed)
    assert target.bert_proj.weight.dtype == torch.float32
    torch.testing.assert_close(target.bert_proj.weight, source.bert_proj.weight.half().float())
    target.load_official_state_dict(source.state_dict())
    torch.testing.assert_close(target.bert_proj.weight, source.bert_proj.weight)


# -------------------------------------------------------------- golden parity
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_embeddings_match_golden(
    version: str, case: str, models: dict[str, Text2SemanticModel], golden_runs: dict
) -> None:
    golden = golden_runs[(version, case)]["golden"]
    model = models[version]
    with torch.inference_mode():
        text = model.embed_text(
            torch.from_numpy(golden["all_phone_ids"])[None],
            torch.from_numpy(golden["bert_feature"])[None],
        )
        audio = model.embed_audio(torch.from_numpy(golden["prompt_semantic"])[None])
    assert _max_diff(text[0], golden["text_pos_prefill"]) < ATOL
    assert _max_diff(audio[0], golden["audio_pos_prefill"]) < ATOL


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_logits_and_hidden_match_golden(version: str, case: str, golden_runs: dict) -> None:
    run = golden_runs[(version, case)]
    golden, result = run["golden"], run["result"]
    assert result.logits is not None and result.hidden is not None
    assert result.logits.shape == golden["logits_all"].shape
    assert _max_diff(result.logits[0], golden["logits_prefill"]) < ATOL
    assert _max_diff(result.logits[10], golden["logits_step10"]) < ATOL
    assert _max_diff(result.logits, golden["logits_all"]) < ATOL
    assert _max_diff(result.hidden, golden["hidden_all"]) < ATOL


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_tokens_and_stop_match_golden(version: str, case: str, golden_runs: dict) -> None:
    run = golden_runs[(version, case)]
    golden, result = run["golden"], run["result"]
    np.testing.assert_array_equal(result.tokens.numpy(), golden["tokens"])
    assert result.stopped_by_eos == bool(golden["stopped_by_eos"])
    assert result.steps == golden["logits_all"].shape[0]
    # The reference returns the prompt followed by the same tokens.
    np.testing.assert_array_equal(
        np.concatenate([golden["prompt_semantic"], result.tokens.numpy()]), golden["y_returned"]
    )


# --------------------------------------------------------------------- cache
def test_static_cache_matches_full_recompute(
    models: dict[str, Text2SemanticModel], golden_runs: dict
) -> None:
    """Cached steps equal a from-scratch pass over the same sequence, even in a dirty cache."""
    model = models["v2"]
    golden = golden_runs[("v2", "main")]["golden"]
    phones = torch.from_numpy(golden["all_phone_ids"])[None]
    bert = torch.from_numpy(golden["bert_feature"])[None]
    prompt = torch.from_numpy(golden["prompt_semantic"])[None]
    new_tokens = torch.from_numpy(golden["tokens"][:6])[None]
    num_text, num_prompt = phones.shape[1], prompt.shape[1]
    prefix = num_text + num_prompt
    with torch.inference_mode():
        full = model.logits(model.forward_full(phones, bert, torch.cat([prompt, new_tokens], 1)))
        cache = KVCache.allocate(model.config, 1, prefix + 20)
        cache.keys.normal_(0.0, 100.0)  # stale slots must not leak into attention
        cache.values.normal_(0.0, 100.0)
        cached = [model.prefill(phones, bert, prompt, cache)]
        for step in range(new_tokens.shape[1]):
            cached.append(
                model.decode_step(
                    new_tokens[:, step : step + 1],
                    torch.tensor([num_prompt + step]),
                    cache,
                    torch.tensor([prefix + step]),
                )
            )
    want = full[0, prefix - 1 :]
    torch.testing.assert_close(torch.cat(cached), want, atol=ATOL, rtol=0)
    # Prefill must not leak audio into text rows: their output ignores the prompt.
    with torch.inference_mode():
        text_only = model.forward_full(phones, bert, prompt[:, :0])
        with_prompt = model.forward_full(phones, bert, prompt)
    torch.testing.assert_close(with_prompt[:, :num_text], text_only, atol=ATOL, rtol=0)


# ------------------------------------------------------------------ sampling
def _history(*tokens: int) -> torch.Tensor:
    return torch.tensor([list(tokens)], dtype=torch.long)


def test_sampling_params_validation() -> None:
    assert SamplingParams() == SamplingParams(15, 1.0, 1.0, 1.35)
    for bad in (
        {"top_k": 0},
        {"top_k": 2.5},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"temperature": -1.0},
        {"temperature": float("nan")},
        {"repetition_penalty": 0.0},
    ):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_eos_is_suppressed_for_the_first_steps() -> None:
    vocab, eos = 8, 7
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5, 0.1, 0.2, 0.3, 9.0]])
    greedy = SamplingParams(top_k=1, repetition_penalty=1.0)
    early = sample_next(logits, _history(), EOS_SUPPRESSED_STEPS - 1, greedy, None, eos)
    assert early.penalised_logits.shape == (1, vocab - 1)
    assert int(early.token) == 2 and not bool(early.argmax_is_eos)
    late = sample_next(logits, _history(), EOS_SUPPRESSED_STEPS, greedy, None, eos)
    assert int(late.token) == eos and bool(late.argmax_is_eos)


def test_repetition_penalty_once_per_distinct_token() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.5, 3.0]])
    original = logits.clone()
    out = apply_repetition_penalty(logits.clone(), _history(0, 0, 0, 1, 1), 2.0)
    torch.testing.assert_close(out, torch.tensor([[1.0, -4.0, 1.5, 3.0]]), atol=0, rtol=0)
    # sample_next penalises the same way and leaves its input alone.
    res = sample_next(logits, _history(0, 0, 1), 20, SamplingParams(1, 1.0, 1.0, 2.0), None, 3)
    torch.testing.assert_close(res.penalised_logits, torch.tensor([[1.0, -4.0, 1.5, 3.0]]))
    assert torch.equal(logits, original)


def test_stop_test_uses_penalised_logits() -> None:
    eos = 4
    # Raw argmax is token 1; after the penalty EOS leads, so the step must stop.
    logits = torch.tensor([[0.0, 3.0, 2.9, 0.5, 2.0]])
    params = SamplingParams(top_k=1, repetition_penalty=2.0)
    res = sample_next(logits, _history(1, 2), EOS_SUPPRESSED_STEPS, params, None, eos)
    assert bool(res.argmax_is_eos) and int(res.token) == eos
    # With a wider top-k the draw can be another token while the stop flag holds.
    wide = SamplingParams(top_k=5, temperature=50.0, repetition_penalty=2.0)
    gen = torch.Generator().manual_seed(3)
    draws = [sample_next(logits, _history(1, 2), 20, wide, gen, eos) for _ in range(40)]
    assert all(bool(d.argmax_is_eos) for d in draws)
    assert any(int(d.token) != eos for d in draws)


def _draw_set(logits: torch.Tensor, params: SamplingParams, n: int = 300) -> set[int]:
    gen = torch.Generator().manual_seed(11)
    eos = logits.shape[-1] - 1
    return {int(sample_next(logits, _history(), 50, params, gen, eos).token) for _ in range(n)}


def test_top_k_and_top_p_filters() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05, 1e-9]])  # last column is "EOS"
    logits = probs.log()
    assert _draw_set(logits, SamplingParams(top_k=2, repetition_penalty=1.0)) == {0, 1}
    assert _draw_set(logits, SamplingParams(top_k=4, repetition_penalty=1.0)) == {0, 1, 2, 3}
    # Top-p drops the token that crosses the threshold (reference behaviour).
    assert _draw_set(logits, SamplingParams(5, top_p=0.7, repetition_penalty=1.0)) == {0}
    assert _draw_set(logits, SamplingParams(5, top_p=0.85, repetition_penalty=1.0)) == {0, 1}
    # Temperature near zero is greedy.
    assert _draw_set(logits, SamplingParams(5, temperature=0.0, repetition_penalty=1.0)) == {0}


def test_seeded_sampling_is_deterministic() -> None:
    logits = torch.randn(1, 1025, generator=torch.Generator().manual_seed(5))
    history = torch.randint(0, 1024, (1, 30), generator=torch.Generator().manual_seed(6))

    def run(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        params = SamplingParams()
        return [int(sample_next(logits, history, 20, params, gen, 1024).token) for _ in range(30)]

    assert run(123) == run(123)
    assert len(set(run(123))) > 1
    # The noise equals what the reference draws from the global RNG under the same seed.
    torch.manual_seed(77)
    global_noise = torch.empty(1, 1025).exponential_(1.0)
    own_noise = torch.empty(1, 1025).exponential_(1.0, generator=torch.Generator().manual_seed(77))
    assert torch.equal(global_noise, own_noise)


# ------------------------------------------------------- decoding loop rules
def _tiny_config() -> GPTConfig:
    return GPTConfig(
        phoneme_vocab_size=20,
        vocab_size=33,
        eos_id=32,
        hidden_dim=32,
        num_heads=4,
        num_layers=2,
        ffn_dim=64,
        bert_dim=16,
        max_positions=2000,
    )


def _tiny_model(eos_bias: float) -> Text2SemanticModel:
    """Random tiny model whose EOS logit is pushed by `eos_bias` at every step."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Text2SemanticModel(_tiny_config()).eval()
    with torch.no_grad():
        # A unit bias on the last LayerNorm makes every hidden row sum to ~dim,
        # so a constant EOS weight row gives EOS a logit of ~dim * eos_bias.
        model.h.layers[-1].norm2.bias.fill_(1.0)
        model.ar_predict_layer.weight[-1].fill_(eos_bias)
    return model


def _tiny_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return (
        torch.randint(0, 20, (7,), generator=gen),
        torch.randn(16, 7, generator=gen),
        torch.randint(0, 32, (5,), generator=gen),
    )


def test_generate_stops_on_eos_after_suppression() -> None:
    model = _tiny_model(eos_bias=10.0)
    seen: list[int] = []
    result = generate(
        model,
        *_tiny_inputs(),
        SamplingParams(),
        torch.Generator().manual_seed(0),
        on_token=seen.append,
        keep_diagnostics=True,
    )
    assert result.stopped_by_eos
    assert result.steps == EOS_SUPPRESSED_STEPS + 1
    assert len(result.tokens) == EOS_SUPPRESSED_STEPS
    assert seen == result.tokens.tolist()
    assert int(result.tokens.max()) < 32


def test_generate_length_caps() -> None:
    model = _tiny_model(eos_bias=-10.0)
    inputs = _tiny_inputs()
    capped = generate(
        model, *inputs, SamplingParams(), torch.Generator().manual_seed(0), early_stop_num=14
    )
    assert (len(capped.tokens), capped.steps, capped.stopped_by_eos) == (15, 15, False)
    short = generate(
        model, *inputs, SamplingParams(), torch.Generator().manual_seed(0), max_new_tokens=3
    )
    assert (len(short.tokens), short.steps) == (3, 3)
    assert short.tokens.tolist() == capped.tokens[:3].tolist()
    with pytest.raises(ValueError):
        generate(model, *inputs, SamplingParams(), None, max_new_tokens=0)
    with pytest.raises(ValueError):
        generate(model, inputs[0], inputs[1], torch.tensor([32]), SamplingParams(), None)


# ------------------------------------------------------------------- export
class _DecodeStepExport(torch.nn.Module):
    """Decode step with the cache as plain tensor inputs, the shape an exporter sees."""

    def __init__(self, model: Text2SemanticModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        cache_len: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> torch.Tensor:
        return self.model.decode_step(token, position, KVCache(keys, values), cache_len)


def test_decode_step_exports_without_data_dependent_control_flow() -> None:
    model = _tiny_model(eos_bias=0.0)
    phones, bert, prompt = _tiny_inputs()
    eager = KVCache.allocate(model.config, 1, 24)
    with torch.inference_mode():
        model.prefill(phones[None], bert[None], prompt[None], eager)
    exported_cache = KVCache(eager.keys.clone(), eager.values.clone())
    step_inputs = (torch.tensor([[3]]), torch.tensor([5]), torch.tensor([12]))
    program = torch.export.export(
        _DecodeStepExport(model), (*step_inputs, exported_cache.keys, exported_cache.values)
    )
    with torch.inference_mode():
        want = model.decode_step(step_inputs[0], step_inputs[1], eager, step_inputs[2])
        got = program.module()(*step_inputs, exported_cache.keys, exported_cache.values)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(exported_cache.keys, eager.keys, atol=1e-6, rtol=0)


# ------------------------------------------------------- cache length buckets
def test_bucket_length_steps_through_the_buckets() -> None:
    from engines.gpt.kv_cache import BUCKET_STEP, CACHE_BUCKETS, bucket_length

    assert CACHE_BUCKETS == (128, 256, 512, 1024, 1536)
    assert [bucket_length(n) for n in (1, 128, 129, 600, 1536)] == [128, 128, 256, 1024, 1536]
    assert bucket_length(1537) == 1536 + BUCKET_STEP  # past the last: steps of 512
    assert bucket_length(129, limit=175) == 175  # never beyond what the session may need
    assert bucket_length(40, limit=60) == 60
    with pytest.raises(ValueError, match="exceed"):
        bucket_length(61, limit=60)


def test_grown_cache_keeps_the_filled_slots_and_filled_views_write_through() -> None:
    cache = KVCache.allocate(_tiny_config(), 1, 8)
    cache.keys.normal_()
    cache.values.normal_()
    bigger = cache.grown(16, filled=5)
    assert bigger.max_len == 16
    assert torch.equal(bigger.keys[..., :5, :], cache.keys[..., :5, :])
    assert bigger.keys[..., 5:, :].abs().sum() == 0 and bigger.values[..., 5:, :].abs().sum() == 0
    view = bigger.filled(6)
    assert view.max_len == 6 and view.keys.data_ptr() == bigger.keys.data_ptr()
    view.layer(0)[0].index_copy_(2, torch.tensor([5]), torch.ones(1, 4, 1, 8))
    assert torch.equal(bigger.keys[0, :, :, 5], torch.ones(1, 4, 8))
    with pytest.raises(ValueError):
        bigger.filled(17)
    with pytest.raises(ValueError):
        bigger.grown(8, filled=5)


def test_torch_session_grows_in_buckets_and_matches_a_full_cache() -> None:
    """A session for a 1 500-token cap starts at one bucket, grows while decoding, and
    gives the logits of a cache allocated at full length (its stale slots hidden)."""
    from engines.gpt.runtime import TorchSession

    model = _tiny_model(eos_bias=0.0)
    phones, bert, prompt = (t[None] for t in _tiny_inputs())
    prefix = phones.shape[1] + prompt.shape[1]
    steps = 140  # crosses the 128-slot bucket
    with torch.inference_mode():
        session = TorchSession(model, prefix + 1500)
        assert session.cache.max_len == 128
        full = KVCache.allocate(model.config, 1, prefix + 1500)
        full.keys.normal_(0.0, 100.0)  # stale slots must stay hidden
        full.values.normal_(0.0, 100.0)
        got = [session.prefill(phones, bert, prompt)]
        want = [model.prefill(phones, bert, prompt, full)]
        for step in range(steps):
            token = int(want[-1].argmax()) % 32
            got.append(session.step(token, prompt.shape[1] + step, prefix + step))
            want.append(
                model.decode_step(
                    torch.tensor([[token]]),
                    torch.tensor([prompt.shape[1] + step]),
                    full,
                    torch.tensor([prefix + step]),
                )
            )
    assert session.cache.max_len == 256
    torch.testing.assert_close(torch.cat(got), torch.cat(want), atol=1e-5, rtol=1e-5)
    # A cap below the first bucket allocates just the cap.
    assert TorchSession(model, 40).cache.max_len == 40
