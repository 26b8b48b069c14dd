"""BERT and HuBERT helpers, and the WAV loader, on tiny random model folders.

The real chinese-roberta-wwm-ext-large / chinese-hubert-base folders are far
too big for tests, so the fixtures write folders with the same architectures
(BertForMaskedLM, HubertModel with the real conv stack) but tiny sizes, in the
file layouts the real folders use, and the real loading code reads them. The
expected values come from running the same weights directly with transformers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soxr
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertTokenizer,
    HubertConfig,
    HubertModel,
)

from engines.features import (
    MAX_PROMPT_SAMPLES,
    MIN_PROMPT_SAMPLES,
    PROMPT_PAD_SAMPLES,
    AudioFileError,
    BertFeaturizer,
    FeatureModelError,
    HubertEncoder,
    ReferenceClipError,
    TextFeatureError,
    load_audio,
    load_prompt_audio,
    prepare_prompt_audio,
    prompt_tokens,
)
from engines.features.bert import token_owner_per_char
from engines.sovits import SoVITSConfig, SoVITSModel
from engines.wav_io import read_wav, write_wav

# ---------------------------------------------------------------------------- tiny BERT

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCT = [",", ".", "!", "?", "…", "-"]
HANZI = list("你好世界我们是中国人今天气很的了在有个这")  # "啊" and Latin are absent on purpose
VOCAB = SPECIALS + PUNCT + HANZI
BERT_HIDDEN = 32
BERT_LAYERS = 4
BERT_MAX_POS = 40


def _tiny_bert() -> BertForMaskedLM:
    cfg = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=BERT_HIDDEN,
        num_hidden_layers=BERT_LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=BERT_MAX_POS,
    )
    torch.manual_seed(1234)
    model = BertForMaskedLM(cfg).eval()
    # Round to fp16 once so the fp16 and fp32 layouts hold the very same values.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


def _write_bert_folder(folder: Path, layout: str) -> None:
    """Layouts: "hf" (save_pretrained), "gpt-sovits" (config + fp16 .bin + tokenizer.json),
    "vocab" (config + .bin + vocab.txt only)."""
    folder.mkdir(parents=True)
    model = _tiny_bert()
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(vocab_file))
    if layout == "hf":
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return
    config = model.config.to_dict()
    config["dtype"] = "float16"  # as a half-precision checkpoint would say
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    torch.save({k: v.half() for k, v in model.state_dict().items()}, folder / "pytorch_model.bin")
    if layout == "gpt-sovits":
        tokenizer.save_pretrained(folder)
        vocab_file.unlink()
        (folder / "tokenizer_config.json").unlink()


@pytest.fixture(scope="session")
def bert_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bert")
    dirs = {layout: root / layout for layout in ("hf", "gpt-sovits", "vocab")}
    for layout, folder in dirs.items():
        _write_bert_folder(folder, layout)
    return dirs


@pytest.fixture(scope="session")
def bert(bert_dirs: dict[str, Path]) -> BertFeaturizer:
    return BertFeaturizer.from_folder(bert_dirs["gpt-sovits"])


@pytest.fixture(scope="session")
def bert_direct(bert_dirs: dict[str, Path]) -> BertForMaskedLM:
    """The same weights, run the plain transformers way (the full 4-layer MLM model)."""
    return BertForMaskedLM.from_pretrained(
        bert_dirs["hf"], local_files_only=True, dtype=torch.float32
    ).eval()


@pytest.fixture(scope="session")
def hf_tokenizer(bert_dirs: dict[str, Path]) -> object:
    """transformers' own tokenizer of the same folder: the reference's tokenization."""
    return AutoTokenizer.from_pretrained(bert_dirs["hf"], local_files_only=True)


def _direct_states(model: BertForMaskedLM, tokenizer: object, text: str) -> tuple:
    enc = tokenizer(text, return_tensors="pt")  # type: ignore[operator]
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    return tuple(h[0, 1:-1] for h in out.hidden_states)


# ---------------------------------------------------------------------------- BERT tests


def test_bert_shape_dtype_and_trimmed_layers(bert: BertFeaturizer) -> None:
    feats = bert.features("你好世界.", [2, 2, 2, 2, 1])
    assert feats.shape == (BERT_HIDDEN, 9)
    assert feats.dtype == torch.float32
    assert {p.dtype for p in bert.model.parameters()} == {torch.float32}  # from an fp16 file
    assert len(bert.model.layers) == BERT_LAYERS - 2


def test_bert_is_layer_minus_3_with_word2ph_expansion(
    bert: BertFeaturizer, bert_direct: BertForMaskedLM, hf_tokenizer: object
) -> None:
    text, word2ph = "我们是中国人!", [2, 2, 2, 2, 2, 2, 1]
    states = _direct_states(bert_direct, hf_tokenizer, text)
    assert len(states) == BERT_LAYERS + 1
    layer = states[-3]
    expected = torch.cat([layer[i].repeat(n, 1) for i, n in enumerate(word2ph)]).T
    feats = bert.features(text, word2ph)
    torch.testing.assert_close(feats, expected, rtol=0, atol=1e-5)
    # Each character's column is repeated word2ph[i] times, in order.
    torch.testing.assert_close(feats[:, 0], feats[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(feats[:, -1], layer[-1], rtol=0, atol=1e-5)
    for other in (states[-1], states[-2], states[-4]):
        assert not torch.allclose(layer, other, atol=1e-3)


def test_bert_zero_and_uneven_word2ph(
    bert: BertFeaturizer, bert_direct: BertForMaskedLM, hf_tokenizer: object
) -> None:
    text, word2ph = "今天,很好", [3, 0, 1, 2, 1]
    layer = _direct_states(bert_direct, hf_tokenizer, text)[-3]
    feats = bert.features(text, word2ph)
    assert feats.shape == (BERT_HIDDEN, 7)
    cols = [0, 0, 0, 2, 3, 3, 4]
    torch.testing.assert_close(feats, layer[cols].T, rtol=0, atol=1e-5)


def test_bert_unknown_chars_stay_one_token_each(
    bert: BertFeaturizer,
    bert_direct: BertForMaskedLM,
    hf_tokenizer: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = "啊你好啊"  # "啊" is not in the vocabulary: one [UNK] per character
    ids = bert.tokenizer.encode(text).ids
    assert bert.tokenizer.unk_id is not None and ids.count(bert.tokenizer.unk_id) == 2
    layer = _direct_states(bert_direct, hf_tokenizer, text)[-3]
    with caplog.at_level(logging.WARNING, logger="engines.features.bert"):
        feats = bert.features(text, [2, 2, 2, 2])
    assert not caplog.records
    torch.testing.assert_close(feats, layer.repeat_interleave(2, dim=0).T, rtol=0, atol=1e-5)


def test_bert_token_count_mismatch_fallback_and_strict(
    bert: BertFeaturizer,
    bert_direct: BertForMaskedLM,
    hf_tokenizer: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # "ab" is one WordPiece token ([UNK]) for two characters, the space gives none.
    text, word2ph = "你ab 好", [2, 1, 1, 1, 2]
    layer = _direct_states(bert_direct, hf_tokenizer, text)[-3]
    assert layer.shape[0] == 3
    with caplog.at_level(logging.WARNING, logger="engines.features.bert"):
        feats = bert.features(text, word2ph)
    assert "5 characters gave 3 BERT tokens" in caplog.text
    expected = torch.stack(
        [layer[0], layer[0], layer[1], layer[1], torch.zeros(BERT_HIDDEN), layer[2], layer[2]]
    ).T
    torch.testing.assert_close(feats, expected, rtol=0, atol=1e-5)
    with pytest.raises(TextFeatureError, match="5 characters gave 3 BERT tokens"):
        bert.features(text, word2ph, strict=True)


def test_token_owner_per_char() -> None:
    assert token_owner_per_char(5, [(0, 1), (1, 3), (4, 5)]) == [0, 1, 1, None, 2]
    assert token_owner_per_char(2, [(0, 2), (0, 1)]) == [0, 0]


def test_bert_input_errors(bert: BertFeaturizer) -> None:
    with pytest.raises(TextFeatureError, match="word2ph has 2 entries but the text has 3"):
        bert.features("你好.", [2, 2])
    with pytest.raises(TextFeatureError, match="negative"):
        bert.features("你好", [2, -1])
    with pytest.raises(TextFeatureError, match="integers"):
        bert.features("你好", [2, 1.5])  # type: ignore[list-item]
    # 38 characters + [CLS] + [SEP] fill the 40 positions; one more does not fit.
    assert bert.features("你" * 38, [1] * 38).shape == (BERT_HIDDEN, 38)
    with pytest.raises(TextFeatureError, match="41 BERT tokens, more than the model's 40"):
        bert.features("你" * 39, [1] * 39)
    assert bert.features("", []).shape == (BERT_HIDDEN, 0)
    assert issubclass(TextFeatureError, ValueError)


def test_bert_features_for_language(bert: BertFeaturizer) -> None:
    text, word2ph = "你好.", [2, 2, 1]
    zh = bert.features(text, word2ph)
    torch.testing.assert_close(bert.features_for("zh", text, word2ph, 5), zh, rtol=0, atol=0)
    torch.testing.assert_close(bert.features_for("all_zh", text, word2ph, 5), zh, rtol=0, atol=0)
    for lang in ("en", "ja", "ko", "yue", "all_ja"):
        zeros = bert.features_for(lang, "hello", None, 6)
        assert zeros.shape == (BERT_HIDDEN, 6) and zeros.dtype == torch.float32
        assert not zeros.any()
    with pytest.raises(TextFeatureError, match="adds up to 5 phones but the segment has 6"):
        bert.features_for("zh", text, word2ph, 6)
    with pytest.raises(TextFeatureError, match="needs word2ph"):
        bert.features_for("zh", text, None, 5)


def test_bert_layouts_agree_and_are_deterministic(
    bert: BertFeaturizer, bert_dirs: dict[str, Path]
) -> None:
    text, word2ph = "这是我的国,今天很好!", [2] * 5 + [1] + [2] * 4 + [1]
    first = bert.features(text, word2ph)
    torch.testing.assert_close(bert.features(text, word2ph), first, rtol=0, atol=0)
    for layout in ("hf", "vocab"):
        other = BertFeaturizer.from_folder(bert_dirs[layout])
        torch.testing.assert_close(other.features(text, word2ph), first, rtol=0, atol=1e-6)


@pytest.mark.parametrize("layout", ["hf", "gpt-sovits", "vocab"])
def test_bert_tokenizer_matches_transformers(
    bert_dirs: dict[str, Path], hf_tokenizer: object, layout: str
) -> None:
    """Ids and character offsets as transformers' tokenizer gives them, for every layout."""
    ours = BertFeaturizer.from_folder(bert_dirs[layout]).tokenizer
    for text in ("你好世界.", "啊你好啊", "你ab 好", "Hello 你好!", "ÀB 中国…", "  ", ""):
        theirs = hf_tokenizer(text, return_offsets_mapping=True)  # type: ignore[operator]
        encoded = ours.encode(text)
        assert encoded.ids == list(theirs["input_ids"]), (layout, text)
        assert encoded.offsets == [tuple(o) for o in theirs["offset_mapping"]], (layout, text)


def test_bert_legacy_checkpoint_names(bert_dirs: dict[str, Path], tmp_path: Path) -> None:
    """TensorFlow-era checkpoints name the norms gamma/beta; a plain BertModel has no prefix."""
    text, word2ph = "我们是中国人!", [2, 2, 2, 2, 2, 2, 1]
    expected = BertFeaturizer.from_folder(bert_dirs["gpt-sovits"]).features(text, word2ph)
    legacy = _copy(bert_dirs["gpt-sovits"], tmp_path / "legacy")
    sd = torch.load(legacy / "pytorch_model.bin", weights_only=True)
    renamed = {
        k.removeprefix("bert.")
        .replace("LayerNorm.weight", "LayerNorm.gamma")
        .replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in sd.items()
        if not k.startswith("cls.")
    }
    assert any(k.endswith(".gamma") for k in renamed)
    torch.save(renamed, legacy / "pytorch_model.bin")
    got = BertFeaturizer.from_folder(legacy).features(text, word2ph)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_bert_loads_without_transformers(bert_dirs: dict[str, Path]) -> None:
    """A box boots without importing transformers (seconds of start-up)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from engines.features.bert import BertFeaturizer\n"
        f"b = BertFeaturizer.from_folder({str(bert_dirs['gpt-sovits'])!r})\n"
        "print(tuple(b.features('你好', [2, 2]).shape), 'transformers' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["(32,", "4)", "False"]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_bert_folder_errors(bert_dirs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FeatureModelError, match="folder not found") as err:
        BertFeaturizer.from_folder(tmp_path / "nope")
    assert "chinese-roberta-wwm-ext-large" in str(err.value)
    assert "GPT_SoVITS/pretrained_models/chinese-roberta-wwm-ext-large" in str(err.value)
    assert isinstance(err.value, ValueError)

    no_config = _copy(bert_dirs["gpt-sovits"], tmp_path / "no_config")
    (no_config / "config.json").unlink()
    with pytest.raises(FeatureModelError, match=r"config\.json is missing"):
        BertFeaturizer.from_folder(no_config)

    no_weights = _copy(bert_dirs["gpt-sovits"], tmp_path / "no_weights")
    (no_weights / "pytorch_model.bin").unlink()
    with pytest.raises(FeatureModelError, match=r"none of model\.safetensors, pytorch_model"):
        BertFeaturizer.from_folder(no_weights)

    no_tok = _copy(bert_dirs["gpt-sovits"], tmp_path / "no_tok")
    (no_tok / "tokenizer.json").unlink()
    with pytest.raises(FeatureModelError, match=r"none of tokenizer\.json, vocab\.txt"):
        BertFeaturizer.from_folder(no_tok)

    broken = _copy(bert_dirs["gpt-sovits"], tmp_path / "broken")
    (broken / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(FeatureModelError, match="could not be loaded"):
        BertFeaturizer.from_folder(broken)

    partial = _copy(bert_dirs["gpt-sovits"], tmp_path / "partial")
    sd = torch.load(partial / "pytorch_model.bin", weights_only=True)
    torch.save({k: v for k, v in sd.items() if ".layer.1." not in k}, partial / "pytorch_model.bin")
    with pytest.raises(FeatureModelError, match="weights do not fit the architecture"):
        BertFeaturizer.from_folder(partial)

    # Older exports have no model_type; the architecture name identifies them.
    old_config = _copy(bert_dirs["gpt-sovits"], tmp_path / "old_config")
    config = json.loads((old_config / "config.json").read_text(encoding="utf-8"))
    config.pop("model_type")
    config["architectures"] = ["BertForMaskedLM"]
    (old_config / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert BertFeaturizer.from_folder(old_config).features("你好", [2, 2]).shape == (32, 4)
    with pytest.raises(FeatureModelError, match="model_type None, expected 'hubert'"):
        HubertEncoder.from_folder(old_config)

    big_vocab = _copy(bert_dirs["vocab"], tmp_path / "big_vocab")
    extra = [f"x{i}" for i in range(10)]
    (big_vocab / "vocab.txt").write_text("\n".join(VOCAB + extra) + "\n", encoding="utf-8")
    with pytest.raises(FeatureModelError, match="do not belong together"):
        BertFeaturizer.from_folder(big_vocab)


# ---------------------------------------------------------------------------- tiny HuBERT

HUBERT_HIDDEN = 16


def _tiny_hubert() -> HubertModel:
    # The default conv stack is the real one (kernels 10,3,3,3,3,2,2, strides 5,2,...,2),
    # so frame counts match chinese-hubert-base; only the widths are tiny.
    cfg = HubertConfig(
        hidden_size=HUBERT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    torch.manual_seed(4321)
    model = HubertModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


@pytest.fixture(scope="session")
def hubert_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hubert")
    model = _tiny_hubert()
    hf = root / "hf"
    model.save_pretrained(hf)
    # The real folder: config.json, preprocessor_config.json and an fp16 pytorch_model.bin
    # with the old weight-norm names of the positional convolution.
    legacy = root / "legacy"
    legacy.mkdir()
    model.config.save_pretrained(legacy)
    (legacy / "preprocessor_config.json").write_text(
        json.dumps({"do_normalize": True, "sampling_rate": 16000}), encoding="utf-8"
    )
    old = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v.half()
        for k, v in model.state_dict().items()
    }
    assert "encoder.pos_conv_embed.conv.weight_g" in old
    torch.save(old, legacy / "pytorch_model.bin")
    return {"hf": hf, "legacy": legacy}


@pytest.fixture(scope="session")
def hubert(hubert_dirs: dict[str, Path]) -> HubertEncoder:
    return HubertEncoder.from_folder(hubert_dirs["legacy"])


@pytest.fixture(scope="session")
def hubert_direct(hubert_dirs: dict[str, Path]) -> HubertModel:
    return HubertModel.from_pretrained(
        hubert_dirs["hf"], local_files_only=True, dtype=torch.float32
    ).eval()


def _clip(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    return (0.3 * torch.sin(2 * math.pi * 220 * t) + 0.05 * torch.randn(n, generator=gen)).float()


def test_hubert_encode_matches_raw_padded_run(
    hubert: HubertEncoder, hubert_direct: HubertModel
) -> None:
    wav = _clip(50_000)
    out = hubert.encode(wav)
    assert out.dtype == torch.float32 and hubert.model.dtype == torch.float32
    assert out.shape == (1, HUBERT_HIDDEN, hubert.frame_count(50_000))
    padded = torch.cat([wav, torch.zeros(PROMPT_PAD_SAMPLES)])
    with torch.no_grad():
        direct = hubert_direct(padded.unsqueeze(0)).last_hidden_state.transpose(1, 2)
    torch.testing.assert_close(out, direct, rtol=0, atol=1e-5)
    # Same clip from numpy, and the result does not depend on the call.
    torch.testing.assert_close(hubert.encode(wav.numpy()), out, rtol=0, atol=0)


def test_prompt_padding_and_frame_counts(hubert: HubertEncoder) -> None:
    wav = _clip(MIN_PROMPT_SAMPLES).numpy()
    padded = prepare_prompt_audio(wav)
    assert padded.dtype == torch.float32 and padded.shape == (MIN_PROMPT_SAMPLES + 9600,)
    assert torch.equal(padded[:MIN_PROMPT_SAMPLES], torch.from_numpy(wav))
    assert not padded[MIN_PROMPT_SAMPLES:].any()
    # chinese-hubert-base's conv stack: 3 s -> 179 frames (149 without the padding),
    # 10 s -> 529; prompt tokens are half of that (ssl_proj k=2, s=2).
    assert hubert.frame_count(48_000) == 179
    assert hubert.frame_count(160_000) == 529
    assert hubert.encode(wav).shape[-1] == 179
    with torch.no_grad():
        unpadded = hubert.model(torch.from_numpy(wav)[None]).last_hidden_state
    assert unpadded.shape[1] == 149


def test_prompt_length_limits() -> None:
    prepare_prompt_audio(torch.zeros(MIN_PROMPT_SAMPLES))
    prepare_prompt_audio(torch.zeros(MAX_PROMPT_SAMPLES))
    with pytest.raises(ReferenceClipError, match=r"2\.00 s .*must be 3 to 10 s"):
        prepare_prompt_audio(torch.zeros(32_000))
    with pytest.raises(ReferenceClipError, match="47999 samples"):
        prepare_prompt_audio(torch.zeros(MIN_PROMPT_SAMPLES - 1))
    with pytest.raises(ReferenceClipError, match="160001 samples"):
        prepare_prompt_audio(torch.zeros(MAX_PROMPT_SAMPLES + 1))
    with pytest.raises(ReferenceClipError, match="mono 1-D"):
        prepare_prompt_audio(torch.zeros(2, 50_000))
    with pytest.raises(ReferenceClipError, match="float samples"):
        prepare_prompt_audio(torch.zeros(50_000, dtype=torch.int16))
    bad = torch.zeros(50_000)
    bad[10] = float("nan")
    with pytest.raises(ReferenceClipError, match="NaN"):
        prepare_prompt_audio(bad)
    assert issubclass(ReferenceClipError, ValueError)


def test_hubert_encode_rejects_bad_length(hubert: HubertEncoder) -> None:
    with pytest.raises(ReferenceClipError):
        hubert.encode(_clip(40_000))


def test_hubert_layouts_agree(hubert: HubertEncoder, hubert_dirs: dict[str, Path]) -> None:
    wav = _clip(60_000, seed=3)
    other = HubertEncoder.from_folder(hubert_dirs["hf"])
    torch.testing.assert_close(other.encode(wav), hubert.encode(wav), rtol=0, atol=1e-5)


def test_hubert_folder_errors(
    hubert_dirs: dict[str, Path], bert_dirs: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(FeatureModelError, match="folder not found") as err:
        HubertEncoder.from_folder(tmp_path / "missing")
    assert "GPT_SoVITS/pretrained_models/chinese-hubert-base" in str(err.value)
    assert "TencentGameMate/chinese-hubert-base" in str(err.value)
    with pytest.raises(FeatureModelError, match="model_type 'bert', expected 'hubert'"):
        HubertEncoder.from_folder(bert_dirs["hf"])
    with pytest.raises(FeatureModelError, match="model_type 'hubert', expected 'bert'"):
        BertFeaturizer.from_folder(hubert_dirs["hf"])

    no_weights = _copy(hubert_dirs["legacy"], tmp_path / "no_weights")
    (no_weights / "pytorch_model.bin").unlink()
    with pytest.raises(FeatureModelError, match=r"none of model\.safetensors"):
        HubertEncoder.from_folder(no_weights)

    bad_config = _copy(hubert_dirs["legacy"], tmp_path / "bad_config")
    (bad_config / "config.json").write_text("{", encoding="utf-8")
    with pytest.raises(FeatureModelError, match="not readable JSON"):
        HubertEncoder.from_folder(bad_config)

    partial = _copy(hubert_dirs["legacy"], tmp_path / "partial")
    sd = torch.load(partial / "pytorch_model.bin", weights_only=True)
    torch.save({k: v for k, v in sd.items() if "layers.1." not in k}, partial / "pytorch_model.bin")
    with pytest.raises(FeatureModelError, match="weights do not fit"):
        HubertEncoder.from_folder(partial)

    # masked_spec_embed is only used in training: a checkpoint without it still loads.
    no_mask = _copy(hubert_dirs["legacy"], tmp_path / "no_mask")
    sd.pop("masked_spec_embed")
    torch.save(sd, no_mask / "pytorch_model.bin")
    HubertEncoder.from_folder(no_mask)


# ---------------------------------------------------------------------------- prompt tokens


@pytest.fixture(scope="session")
def tiny_sovits() -> SoVITSModel:
    cfg = dataclasses.replace(
        SoVITSConfig.for_version("v2"),
        ssl_dim=HUBERT_HIDDEN,
        codebook_size=64,
        upsample_initial_channel=32,
    )
    model = SoVITSModel(cfg).eval()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        model.quantizer.vq.layers[0]._codebook.embed.copy_(
            torch.randn(64, HUBERT_HIDDEN, generator=gen)
        )
    return model


def test_prompt_tokens(hubert: HubertEncoder, tiny_sovits: SoVITSModel) -> None:
    wav = _clip(48_000, seed=5)
    tokens = prompt_tokens(hubert, tiny_sovits, wav)
    assert tokens.dtype == torch.int64 and tokens.shape == (89,)
    assert tokens.min() >= 0 and tokens.max() < 64
    assert len(set(tokens.tolist())) > 1
    expected = tiny_sovits.extract_latent(hubert.encode(wav))[0, 0]
    assert torch.equal(tokens, expected)
    assert torch.equal(prompt_tokens(hubert, tiny_sovits, wav), tokens)
    assert prompt_tokens(hubert, tiny_sovits, _clip(160_000)).shape == (264,)


def test_prompt_tokens_dim_mismatch(hubert: HubertEncoder) -> None:
    sovits = SoVITSModel(dataclasses.replace(SoVITSConfig(), ssl_dim=24, codebook_size=8))
    with pytest.raises(FeatureModelError, match="16-d features but the SoVITS model expects 24"):
        prompt_tokens(hubert, sovits, _clip(50_000))


# ---------------------------------------------------------------------------- WAV loading


def _wav_bytes(
    data: bytes,
    *,
    tag: int = 1,
    channels: int = 1,
    rate: int = 16000,
    bits: int = 16,
    extensible: bool = False,
    chunks_before: bytes = b"",
    data_size: int | None = None,
) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block, block, bits
    )
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHIH", 22, bits, 0, tag) + guid_tail
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + chunks_before
    body += b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _write(path: Path, blob: bytes) -> Path:
    path.write_bytes(blob)
    return path


def test_wav_16bit_matches_wav_io(tmp_path: Path) -> None:
    audio = np.sin(np.linspace(0, 40, 16000)).astype(np.float32) * 0.8
    path = write_wav(tmp_path / "a.wav", audio, sample_rate=16000)
    loaded = load_audio(path, 16000)
    pcm = np.clip(np.trunc(audio * 32768), -32768, 32767).astype(np.int16)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, pcm.astype(np.float32) / 32768)


def test_wav_sample_formats(tmp_path: Path) -> None:
    i24 = np.array([-(2**23), -1, 0, 1, 2**23 - 1], dtype=np.int32)
    raw24 = b"".join(int(v).to_bytes(3, "little", signed=True) for v in i24)
    got, rate = read_wav(_write(tmp_path / "24.wav", _wav_bytes(raw24, bits=24)))
    assert rate == 16000
    np.testing.assert_array_equal(got[0], i24.astype(np.float32) / 2**23)

    f32 = np.array([-1.5, -0.25, 0.0, 0.5, 1.25], dtype="<f4")  # float data is not clipped
    got, _ = read_wav(_write(tmp_path / "f32.wav", _wav_bytes(f32.tobytes(), tag=3, bits=32)))
    np.testing.assert_array_equal(got[0], f32)

    f64 = np.array([0.1, -0.2], dtype="<f8")
    got, _ = read_wav(_write(tmp_path / "f64.wav", _wav_bytes(f64.tobytes(), tag=3, bits=64)))
    np.testing.assert_array_equal(got[0], f64.astype(np.float32))

    i32 = np.array([-(2**31), 2**31 - 1, 12345], dtype="<i4")
    got, _ = read_wav(_write(tmp_path / "i32.wav", _wav_bytes(i32.tobytes(), bits=32)))
    np.testing.assert_array_equal(got[0], i32.astype(np.float32) / np.float32(2**31))

    u8 = np.array([0, 128, 255], dtype=np.uint8)
    got, _ = read_wav(_write(tmp_path / "u8.wav", _wav_bytes(u8.tobytes(), bits=8)))
    np.testing.assert_array_equal(got[0], np.array([-1.0, 0.0, 127 / 128], dtype=np.float32))

    i16 = np.array([-32768, 5, 32767], dtype="<i2")
    ext = _wav_bytes(i16.tobytes(), extensible=True)
    got, _ = read_wav(_write(tmp_path / "ext.wav", ext))
    np.testing.assert_array_equal(got[0], i16.astype(np.float32) / 32768)


def test_wav_stereo_is_averaged(tmp_path: Path) -> None:
    left = np.array([1000, -2000, 3000, 7], dtype=np.int16)
    right = np.array([-1000, 2000, 1001, 8], dtype=np.int16)
    inter = np.stack([left, right], axis=1).astype("<i2").tobytes()
    # An odd-sized chunk before the data exercises the RIFF pad byte.
    listing = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\x00"
    path = _write(tmp_path / "st.wav", _wav_bytes(inter, channels=2, chunks_before=listing))
    got = load_audio(path, 16000)
    expected = (left.astype(np.float32) / 32768 + right.astype(np.float32) / 32768) / 2
    np.testing.assert_array_equal(got, expected.astype(np.float32))


@pytest.mark.parametrize(("rate", "n"), [(32000, 96_000), (44100, 132_301), (48000, 100_001)])
def test_wav_resampled_with_soxr_hq(tmp_path: Path, rate: int, n: int) -> None:
    gen = np.random.default_rng(rate)
    pcm = (gen.standard_normal(n) * 3000).astype("<i2")
    path = _write(tmp_path / "r.wav", _wav_bytes(pcm.tobytes(), rate=rate))
    got = load_audio(path, 16000)
    assert got.dtype == np.float32
    assert got.shape == (math.ceil(n * 16000 / rate),)
    ref = soxr.resample(pcm.astype(np.float32) / 32768, rate, 16000, quality="HQ")
    np.testing.assert_array_equal(got[: len(ref)], ref[: len(got)])


def test_wav_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="cannot read audio file"):
        load_audio(tmp_path / "missing.wav", 16000)
    with pytest.raises(AudioFileError, match="not a WAV file"):
        load_audio(_write(tmp_path / "junk.wav", b"ID3\x03 this is an mp3"), 16000)
    adpcm = _wav_bytes(b"\x00" * 8, tag=2, bits=4)
    with pytest.raises(AudioFileError, match="MS ADPCM WAV is not supported"):
        load_audio(_write(tmp_path / "adpcm.wav", adpcm), 16000)
    with pytest.raises(AudioFileError, match="12-bit PCM WAV is not supported"):
        load_audio(_write(tmp_path / "b12.wav", _wav_bytes(b"\x00" * 8, bits=12)), 16000)
    with pytest.raises(AudioFileError, match="no audio frames"):
        load_audio(_write(tmp_path / "empty.wav", _wav_bytes(b"")), 16000)
    no_data = _wav_bytes(b"")[:-8]
    with pytest.raises(AudioFileError, match="no data chunk"):
        load_audio(_write(tmp_path / "nodata.wav", no_data), 16000)
    with pytest.raises(AudioFileError, match="no fmt chunk"):
        load_audio(_write(tmp_path / "nofmt.wav", b"RIFF\x04\x00\x00\x00WAVE"), 16000)
    assert issubclass(AudioFileError, ReferenceClipError)
    # A data chunk that claims more than the file holds is read as far as it goes.
    short = _wav_bytes(np.array([1, 2, 3], dtype="<i2").tobytes() + b"\x07", data_size=1000)
    got = load_audio(_write(tmp_path / "short.wav", short), 16000)
    np.testing.assert_array_equal(got, np.array([1, 2, 3], dtype=np.float32) / 32768)


def test_reference_clip_file_to_prompt(
    tmp_path: Path, hubert: HubertEncoder, tiny_sovits: SoVITSModel
) -> None:
    t = np.arange(4 * 32000) / 32000
    stereo = np.stack([np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 330 * t)], axis=1) * 0.4
    pcm = np.round(stereo * 32767).astype("<i2")
    path = _write(tmp_path / "ref.wav", _wav_bytes(pcm.tobytes(), channels=2, rate=32000))
    wav16k = load_prompt_audio(path)
    assert wav16k.dtype == torch.float32 and wav16k.shape == (64_000,)
    ssl = hubert.encode(wav16k)
    assert ssl.shape == (1, HUBERT_HIDDEN, hubert.frame_count(64_000))
    assert prompt_tokens(hubert, tiny_sovits, wav16k).shape == (hubert.frame_count(64_000) // 2,)
