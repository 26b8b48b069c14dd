"""The voice folder: one speaker's prepared artefacts, what a box boots a voice from.

A voice folder holds everything a kiosk needs to speak with one voice, computed
once on a workstation (or by the build step) so that the box never needs HuBERT
or the speaker model, and never hashes model weights at boot:

    <folder>/
      voice.json     the config below (JSON, UTF-8)
      gpt.ckpt       the official GPT weights, unchanged
      sovits.pth     the official SoVITS weights, unchanged
      prompt.npz     the precomputed reference prompt (see `save_prompt`)
      lexicon.txt    optional: the voice's own pronunciations
      graphs/        optional: exported runtime graphs with their manifest

The voice-pack format carries the same files; provisioning installs a pack as
a voice folder.  Every file is written whole or not at all.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.durable_files import atomic_write_bytes, fsync_dir
from engines.gpt.sampling import SamplingParams
from engines.sovits.synthesizer import Timbre
from engines.synthesis import SynthesisOptions, VoicePrompt
from engines.voice_layout import (
    CONFIG_FILE,
    GPT_FILE,
    LEXICON_FILE,
    PROMPT_FILE,
    SOVITS_FILE,
)
from engines.voice_layout import GRAPHS_DIR as GRAPHS_DIR  # part of this module's interface

FORMAT = "kiosk-voice/1"
TEXT_FEATURES = ("bert", "zeros")
MODEL_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")


class VoiceFolderError(ValueError):
    """A voice folder that cannot be used; the message names the file and the fix."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, streamed (model files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class SpeakDefaults:
    """How the voice speaks when a caller gives no settings of its own.

    The sampling and decoding defaults are the library's (the official app's).
    """

    language: str = "zh"
    """Text language mode: zh (Mandarin with English words), en, or auto."""

    cut: str = SynthesisOptions.text_split_method
    """Segmentation method cut0..cut5 (see `engines.text.segmentation`); the official
    API's default, cut5, splits at every punctuation mark."""

    top_k: int = SamplingParams.top_k
    """GPT sampling: only the k most likely tokens are drawn from."""

    top_p: float = SamplingParams.top_p
    """GPT sampling: nucleus probability mass."""

    temperature: float = SamplingParams.temperature
    """GPT sampling temperature (0 = greedy)."""

    repetition_penalty: float = SamplingParams.repetition_penalty
    """GPT: penalty on tokens already produced."""

    speed: float = SynthesisOptions.speed
    """Speaking rate; 1.0 is the recording's own pace."""

    noise_scale: float = SynthesisOptions.noise_scale
    """SoVITS prior noise; 0 is deterministic."""

    seed: int = 0
    """Sampling seed: the same seed gives the same samples."""

    max_tokens_per_phone: int | None = None
    """Guard for a model that never says EOS (25 tokens per second); None: no guard."""


@dataclass(frozen=True)
class VoiceConfig:
    """`voice.json`: what a voice folder holds, and how the voice speaks by default."""

    id: str
    """Stable identifier of the voice (letters, digits, '-' and '_')."""

    gpt_version: str
    """GPT-SoVITS version of the GPT file (v1 or v2 architecture tables)."""

    sovits_version: str
    """GPT-SoVITS version of the SoVITS file: v1, v2, v2Pro or v2ProPlus."""

    gpt_sha256: str
    """SHA-256 of `gpt.ckpt`: the voice's identity, and the key of its graphs."""

    sovits_sha256: str
    """SHA-256 of `sovits.pth`."""

    prompt_sha256: str
    """SHA-256 of `prompt.npz`."""

    reference_text: str
    """The words spoken in the reference clip."""

    reference_language: str = "zh"
    """Language mode of `reference_text`."""

    version: int = 1
    """The voice's own version (the voice pack's), for caches and reports."""

    text_features: str = "bert"
    """"bert": Mandarin text needs the BERT model; "zeros": no BERT (the untrained
    demo voice only: real voices sound wrong without it)."""

    lexicon: bool = False
    """Whether `lexicon.txt` is present."""

    defaults: SpeakDefaults = field(default_factory=SpeakDefaults)
    """Settings used when a caller gives none."""

    notice: str = ""
    """Shown in logs when the voice loads (e.g. the demo voice's 'untrained' warning)."""

    format: str = FORMAT
    """Format tag of this file; other values are refused."""

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), ensure_ascii=False, indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, source: str = CONFIG_FILE) -> VoiceConfig:
        """Parse and validate; unknown or missing keys are errors that name the key."""
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VoiceFolderError(f"{source}: not valid UTF-8 JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise VoiceFolderError(f"{source}: expected a JSON object")
        if raw.get("format") != FORMAT:
            raise VoiceFolderError(
                f"{source}: format {raw.get('format')!r} is not {FORMAT!r}; "
                "prepare the voice again with this firmware"
            )
        defaults = _build(SpeakDefaults, raw.pop("defaults", {}), f"{source}: defaults")
        config = _build(cls, {**raw, "defaults": defaults}, source)
        config.validate(source)
        return config

    def validate(self, source: str = CONFIG_FILE) -> None:
        if not self.id or not all(c.isalnum() or c in "-_" for c in self.id):
            raise VoiceFolderError(f"{source}: id {self.id!r} must be letters, digits, - or _")
        if self.sovits_version not in MODEL_VERSIONS:
            raise VoiceFolderError(
                f"{source}: sovits_version {self.sovits_version!r} is not one of "
                f"{', '.join(MODEL_VERSIONS)}"
            )
        if self.text_features not in TEXT_FEATURES:
            raise VoiceFolderError(
                f"{source}: text_features {self.text_features!r} is not one of "
                f"{', '.join(TEXT_FEATURES)}"
            )
        for name in ("gpt_sha256", "sovits_sha256", "prompt_sha256"):
            value = getattr(self, name)
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise VoiceFolderError(f"{source}: {name} must be 64 lowercase hex digits")
        if not self.reference_text.strip():
            raise VoiceFolderError(f"{source}: reference_text is empty")


def _build(cls: type, raw: Any, source: str) -> Any:
    if not isinstance(raw, dict):
        raise VoiceFolderError(f"{source}: expected a JSON object")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise VoiceFolderError(f"{source}: unknown key(s) {', '.join(unknown)}")
    try:
        value = cls(**raw)
    except TypeError as exc:
        raise VoiceFolderError(f"{source}: {exc}") from exc
    for f in fields(cls):
        got = getattr(value, f.name)
        if isinstance(got, float) and not math.isfinite(got):
            raise VoiceFolderError(f"{source}: {f.name} must be a finite number")
    return value


def read_config(folder: str | Path) -> VoiceConfig:
    """The folder's `voice.json`, validated, with its model files present."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise VoiceFolderError(
            f"{folder}: no {CONFIG_FILE}; this is not a voice folder "
            "(make one with `kiosk prepare-voice`)"
        )
    config = VoiceConfig.from_json(path.read_bytes(), str(path))
    for name in (GPT_FILE, SOVITS_FILE, PROMPT_FILE) + ((LEXICON_FILE,) if config.lexicon else ()):
        if not (folder / name).is_file():
            raise VoiceFolderError(f"{folder}: {name} is missing; install the voice again")
    return config


def write_config(folder: str | Path, config: VoiceConfig) -> Path:
    config.validate()
    return atomic_write_bytes(Path(folder) / CONFIG_FILE, config.to_json())


# --- the precomputed prompt -------------------------------------------------------------

_TIMBRE_KEYS = ("ge", "ge_text", "ge_ref")


def prompt_bytes(prompt: VoicePrompt, sv_embedding: torch.Tensor | None = None) -> bytes:
    """`prompt.npz` content: prompt tokens, reference phones and BERT, timbre, SV embedding.

    Plain arrays only (no pickle), so a pack from anywhere can be read safely.
    """
    arrays: dict[str, np.ndarray] = {
        "phone_ids": prompt.phone_ids.to(torch.int64).numpy(),
        "bert": prompt.bert.to(torch.float32).numpy(),
        "semantic_tokens": prompt.semantic_tokens.to(torch.int64).numpy(),
    }
    for key in _TIMBRE_KEYS:
        arrays[key] = getattr(prompt.timbre, key).detach().to(torch.float32).cpu().numpy()
    if prompt.timbre.sv_proj is not None:
        arrays["sv_proj"] = prompt.timbre.sv_proj.detach().to(torch.float32).cpu().numpy()
    if sv_embedding is not None:
        arrays["sv_embedding"] = sv_embedding.detach().to(torch.float32).cpu().numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def save_prompt(path: str | Path, prompt: VoicePrompt, sv_embedding: torch.Tensor | None = None):
    """Write `prompt.npz` atomically; returns its path."""
    return atomic_write_bytes(path, prompt_bytes(prompt, sv_embedding))


def load_prompt(path: str | Path) -> VoicePrompt:
    """Read `prompt.npz` back (refusing pickled objects and wrong shapes)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise VoiceFolderError(f"{path}: not a readable prompt file ({exc})") from exc
    missing = [
        k for k in ("phone_ids", "bert", "semantic_tokens", *_TIMBRE_KEYS) if k not in arrays
    ]
    if missing:
        raise VoiceFolderError(f"{path}: missing {', '.join(missing)}; prepare the voice again")
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise VoiceFolderError(f"{path}: {key} holds NaN or infinite values")
    sv_proj = arrays.get("sv_proj")
    timbre = Timbre(
        *(torch.from_numpy(arrays[k]) for k in _TIMBRE_KEYS),
        sv_proj=torch.from_numpy(sv_proj) if sv_proj is not None else None,
    )
    try:
        return VoicePrompt(
            phone_ids=torch.from_numpy(arrays["phone_ids"]).long(),
            bert=torch.from_numpy(arrays["bert"]).float(),
            semantic_tokens=torch.from_numpy(arrays["semantic_tokens"]).long(),
            timbre=timbre,
        )
    except ValueError as exc:
        raise VoiceFolderError(f"{path}: {exc}") from exc


def write_voice_folder(
    out: str | Path,
    *,
    voice_id: str,
    gpt: str | Path,
    sovits: str | Path,
    gpt_version: str,
    sovits_version: str,
    prompt: VoicePrompt,
    reference_text: str,
    reference_language: str = "zh",
    lexicon: str | Path | None = None,
    version: int = 1,
    text_features: str = "bert",
    defaults: SpeakDefaults | None = None,
    notice: str = "",
) -> Path:
    """Write a complete voice folder at `out`: staged beside it, then renamed into place.

    The official files are copied unchanged.  An existing folder at `out` is
    replaced only once the new one is complete, so a power cut leaves the old
    folder or the new one.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.staging-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        for src, name in ((gpt, GPT_FILE), (sovits, SOVITS_FILE)):
            shutil.copyfile(src, stage / name)
        if lexicon is not None:
            shutil.copyfile(lexicon, stage / LEXICON_FILE)
        save_prompt(stage / PROMPT_FILE, prompt)
        config = VoiceConfig(
            id=voice_id,
            gpt_version=gpt_version,
            sovits_version=sovits_version,
            gpt_sha256=file_sha256(stage / GPT_FILE),
            sovits_sha256=file_sha256(stage / SOVITS_FILE),
            prompt_sha256=file_sha256(stage / PROMPT_FILE),
            reference_text=reference_text,
            reference_language=reference_language,
            version=version,
            text_features=text_features,
            lexicon=lexicon is not None,
            defaults=defaults or SpeakDefaults(),
            notice=notice,
        )
        write_config(stage, config)
        for name in os.listdir(stage):
            with open(stage / name, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(stage)
        _swap_into_place(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _swap_into_place(stage: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)
