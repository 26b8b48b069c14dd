"""The golden cases: what each file promises and how our models are held to it.

Each golden file becomes several report lines (prefill logits, tokens, audio
at each speed, ...).  The expensive part (one decoding run, one synthesis) is
computed once per file and shared by that file's lines.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devtools.compat.comparison import (
    ATOL_AUDIO,
    ATOL_FEATURES,
    ATOL_LOGITS,
    SPEC_ATOL,
    SPEC_RTOL,
    Verdict,
    close,
    combine,
    equal,
)
from devtools.compat.golden_set import (
    GOLDEN_FILE,
    Case,
    GoldenSetError,
    ModelBank,
    call_arguments,
    read_npz,
)
from devtools.formula_weights import formula_array
from engines.gpt.decoding import generate
from engines.gpt.sampling import SamplingParams
from engines.sovits.spectrogram import reference_spectrogram
from engines.text.frontend import TextFrontend
from engines.text.symbols import phones_to_ids

_AUDIO_KEY = re.compile(r"^audio_speed(\d+)(?:_(\d+))?$")


def weight_cases(keys_file: Path, bank: ModelBank) -> Iterator[Case]:
    """Our models have the official keys and shapes, and our formula port the same values."""
    try:
        spec = json.loads(keys_file.read_text())
        seed = int(spec["seed"])
        families = {fam: spec[fam] for fam in ("gpt", "sovits")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GoldenSetError(f"{keys_file}: not a readable key list ({exc})") from exc
    for family, versions in families.items():
        for version, entry in versions.items():
            yield Case(
                f"weights {family} {version}: official keys, shapes and formula values",
                "weights",
                functools.partial(_check_weights, family, version, entry["keys"], seed, bank),
            )


def _check_weights(
    family: str, version: str, keys: list[dict[str, Any]], seed: int, bank: ModelBank
) -> Verdict:
    ours = bank.official_shapes(family, version)
    theirs = {k["key"]: tuple(k["shape"]) for k in keys}
    if ours != theirs:
        missing = sorted(set(theirs) - set(ours))[:3]
        extra = sorted(set(ours) - set(theirs))[:3]
        reshaped = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])[:3]
        return Verdict(False, f"key mismatch: missing {missing} extra {extra} shape {reshaped}")
    wrong = [
        k["key"]
        for k in keys
        if "sha256_f32" in k
        and hashlib.sha256(formula_array(k["key"], k["shape"], seed).tobytes()).hexdigest()
        != k["sha256_f32"]
    ]
    if wrong:
        return Verdict(False, f"{len(wrong)} formula values differ, e.g. {wrong[0]}")
    return Verdict(True, f"{len(keys)} keys identical, formula SHA-256 all equal")


def gpt_cases(path: Path, bank: ModelBank) -> Iterator[Case]:
    """Prefill logits, greedy tokens and later-step logits of one GPT golden file."""
    arrays, meta = read_npz(path)
    version = GOLDEN_FILE.match(path.name).group(2)  # type: ignore[union-attr]
    label = f"gpt {version} {meta.get('case', 'main')}"
    run = functools.cache(lambda: _run_gpt(arrays, meta, version, bank))

    def check(fn: Callable[[dict[str, Any]], Verdict]) -> Callable[[], Verdict]:
        return lambda: fn(run())

    yield Case(
        f"{label}: embeddings + positions",
        "gpt",
        check(
            lambda r: combine(
                close("text", r["text_pos_prefill"], arrays["text_pos_prefill"], ATOL_LOGITS),
                close("audio", r["audio_pos_prefill"], arrays["audio_pos_prefill"], ATOL_LOGITS),
            )
        ),
    )
    yield Case(
        f"{label}: prefill logits",
        "gpt",
        check(lambda r: close("logits", r["logits"][0], arrays["logits_prefill"], ATOL_LOGITS)),
    )
    if "logits_step10" in arrays:
        yield Case(
            f"{label}: logits at step 10",
            "gpt",
            check(lambda r: _step_logits(r, 10, arrays["logits_step10"])),
        )
    yield Case(
        f"{label}: logits + hidden at every step",
        "gpt",
        check(
            lambda r: combine(
                close("logits", r["logits"], arrays["logits_all"], ATOL_LOGITS),
                close("hidden", r["hidden"], arrays["hidden_all"], ATOL_LOGITS),
            )
        ),
    )
    yield Case(
        f"{label}: greedy tokens and stop",
        "gpt",
        check(
            lambda r: combine(
                equal("tokens", r["tokens"], arrays["tokens"]),
                equal("stopped_by_eos", r["stopped_by_eos"], bool(arrays["stopped_by_eos"])),
                equal("steps", r["steps"], arrays["logits_all"].shape[0]),
            )
        ),
    )


def _step_logits(result: dict[str, Any], step: int, want: np.ndarray) -> Verdict:
    if result["logits"].shape[0] <= step:
        return Verdict(False, f"only {result['logits'].shape[0]} steps ran")
    return close("logits", result["logits"][step], want, ATOL_LOGITS)


def _run_gpt(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], version: str, bank: ModelBank
) -> dict[str, Any]:
    model = bank.gpt(version, int(meta["seed"]))
    args = call_arguments(meta.get("call", ""))
    params = SamplingParams(
        top_k=int(args.get("top_k", 1)),
        top_p=args.get("top_p", 1.0),
        temperature=args.get("temperature", 1.0),
        repetition_penalty=args.get("repetition_penalty", 1.35),
    )
    early_stop = args.get("early_stop_num")
    phones = torch.from_numpy(arrays["all_phone_ids"])[None]
    bert = torch.from_numpy(arrays["bert_feature"])[None]
    prompt = torch.from_numpy(arrays["prompt_semantic"])[None]
    with torch.inference_mode():
        text_pos = model.embed_text(phones, bert)[0].numpy()
        audio_pos = model.embed_audio(prompt)[0].numpy()
        result = generate(
            model,
            phones,
            bert,
            prompt,
            params,
            torch.Generator().manual_seed(0),
            early_stop_num=None if early_stop is None else int(early_stop),
            keep_diagnostics=True,
        )
    return {
        "text_pos_prefill": text_pos,
        "audio_pos_prefill": audio_pos,
        "logits": result.logits.numpy(),
        "hidden": result.hidden.numpy(),
        "tokens": result.tokens.numpy(),
        "stopped_by_eos": result.stopped_by_eos,
        "steps": result.steps,
    }


def sovits_cases(path: Path, bank: ModelBank) -> Iterator[Case]:
    """Spectrogram, timbre, codes, encoder/flow intermediates and audio at each speed."""
    arrays, meta = read_npz(path)
    version = GOLDEN_FILE.match(path.name).group(2)  # type: ignore[union-attr]
    label = f"sovits {version}"
    seed = int(meta["seed"])
    front = functools.cache(lambda: _sovits_front(arrays, version, seed, bank))

    yield Case(
        f"{label}: reference spectrogram",
        "sovits",
        lambda: close("spec", front()["spec"], arrays["ref_spec"], SPEC_ATOL, SPEC_RTOL),
    )
    yield Case(f"{label}: timbre ge", "sovits", lambda: _check_timbre(front(), arrays))
    yield Case(
        f"{label}: latent codes",
        "sovits",
        lambda: equal("codes", front()["latent_codes"], arrays["latent_codes"]),
    )
    for key in sorted(k for k in arrays if _AUDIO_KEY.match(k)):
        whole, frac = _AUDIO_KEY.match(key).groups()  # type: ignore[union-attr]
        speed = float(f"{whole}.{frac or 0}")
        suffix = key.removeprefix("audio")
        decoded = functools.cache(
            functools.partial(_sovits_decode, front, arrays, speed, bank, version, seed)
        )
        yield Case(
            f"{label}: audio at speed {speed:g}",
            "sovits",
            functools.partial(_check_decode, decoded, arrays, key, suffix),
        )


def _sovits_front(
    arrays: dict[str, np.ndarray], version: str, seed: int, bank: ModelBank
) -> dict[str, Any]:
    model = bank.sovits(version, seed)
    with torch.inference_mode():
        spec = reference_spectrogram(torch.from_numpy(arrays["ref_wav"])[None])
        sv = torch.from_numpy(arrays["sv_emb"]) if "sv_emb" in arrays else None
        timbre = model.timbre(spec, sv)
        codes = model.extract_latent(torch.from_numpy(arrays["ssl"]))
    return {"spec": spec.numpy(), "timbre": timbre, "latent_codes": codes.numpy()}


def _check_timbre(front: dict[str, Any], arrays: dict[str, np.ndarray]) -> Verdict:
    timbre = front["timbre"]
    checks = [
        close("ge_ref", timbre.ge_ref, arrays["ge_ref"], ATOL_FEATURES),
        close("ge", timbre.ge, arrays["ge"], ATOL_FEATURES),
    ]
    if "ge512" in arrays:
        checks.append(close("ge512", timbre.ge_text, arrays["ge512"], ATOL_FEATURES))
    if "sv_proj" in arrays:
        got = timbre.sv_proj if timbre.sv_proj is not None else np.zeros(0)
        checks.append(close("sv_proj", got, arrays["sv_proj"], ATOL_FEATURES))
    return combine(*checks)


def _sovits_decode(
    front: Callable[[], dict[str, Any]],
    arrays: dict[str, np.ndarray],
    speed: float,
    bank: ModelBank,
    version: str,
    seed: int,
) -> Any:
    model = bank.sovits(version, seed)
    with torch.inference_mode():
        return model.decode_with_intermediates(
            torch.from_numpy(arrays["codes"]),
            torch.from_numpy(arrays["text_ids"]),
            front()["timbre"],
            speed=speed,
            noise_scale=0.0,
        )


def _check_decode(
    decoded: Callable[[], Any], arrays: dict[str, np.ndarray], key: str, suffix: str
) -> Verdict:
    result = decoded()
    checks = [close("audio", result.audio[0, 0], arrays[key], ATOL_AUDIO)]
    for name, got in (("m_p", result.m_p), ("logs_p", result.logs_p), ("z", result.z)):
        if f"{name}{suffix}" in arrays:
            checks.append(close(name, got, arrays[f"{name}{suffix}"], ATOL_FEATURES))
    if f"y_mask{suffix}" in arrays:
        checks.append(close("y_mask", result.y_mask, arrays[f"y_mask{suffix}"], 0.0))
    return combine(*checks)


def text_cases(path: Path) -> Iterator[Case]:
    """Text-frontend sentences: normalised text, phones, word2ph and ids, per symbol version."""
    try:
        cases = json.loads(path.read_text(encoding="utf-8"))["cases"]
    except (OSError, ValueError, KeyError) as exc:
        raise GoldenSetError(f"{path}: not a readable text golden file ({exc})") from exc
    for case in cases:
        yield Case(
            f"text {case.get('id', '?')} ({case.get('kind', '?')})",
            "text",
            functools.partial(_check_text_case, case),
        )


def _check_text_case(case: dict[str, Any]) -> Verdict:
    text, kind = case["text"], case["kind"]
    checks: list[Verdict] = []
    for version in ("v1", "v2"):
        frontend = TextFrontend(version)
        if kind in ("zh", "en") and case.get(version):
            result = frontend.g2p(text, kind)
            checks.append(
                _same_text_result(
                    version,
                    result.norm_text,
                    result.phones,
                    result.word2ph,
                    frontend,
                    case[version],
                )
            )
    if kind == "mixed_zh":
        frontend = TextFrontend("v2")
        if "v2_clean_text_zh" in case:
            result = frontend.g2p(text, "zh")
            checks.append(
                _same_text_result(
                    "clean_text",
                    result.norm_text,
                    result.phones,
                    result.word2ph,
                    frontend,
                    case["v2_clean_text_zh"],
                )
            )
        if "v2_webui_zh" in case:
            want = case["v2_webui_zh"]
            segment = frontend.phones(text, "zh")
            checks.append(
                combine(
                    equal("webui norm_text", segment.norm_text, want["norm_text"]),
                    equal("webui phones", segment.phones, want["phones"]),
                    equal("webui ids", segment.phone_ids, want["phone_ids"]),
                )
            )
    if not checks:
        return Verdict(False, f"no expected results for kind {kind!r}")
    return combine(*checks)


def _same_text_result(
    label: str,
    norm_text: str,
    phones: list[str],
    word2ph: list[int] | None,
    frontend: TextFrontend,
    want: dict[str, Any],
) -> Verdict:
    return combine(
        equal(f"{label} norm_text", norm_text, want["norm_text"]),
        equal(f"{label} phones", phones, want["phones"]),
        equal(
            f"{label} word2ph",
            word2ph if word2ph is not None else "null",
            want["word2ph"] if want.get("word2ph") is not None else "null",
        ),
        equal(f"{label} ids", phones_to_ids(phones, frontend.symbols_version), want["phone_ids"]),
    )
