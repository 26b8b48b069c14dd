"""Load a speaker's GPT and SoVITS files into ready-to-run models.

This is the "load" step of the data flow (pack -> verify -> build -> load ->
synthesize -> play): it reads the official files, checks that the two belong
together, builds the matching architectures and puts the weights in place.
Any mismatch becomes a `CheckpointError` naming the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from engines.checkpoint_reader import (
    CheckpointError,
    GPTCheckpoint,
    SoVITSCheckpoint,
    check_pair,
    describe_error,
    load_gpt_checkpoint,
    load_sovits_checkpoint,
)
from engines.gpt.config import GPTConfig
from engines.gpt.model import Text2SemanticModel
from engines.sovits.synthesizer import SoVITSModel


@dataclass
class VoiceModels:
    """A speaker's two networks, in eval mode, on one device."""

    gpt: Text2SemanticModel
    sovits: SoVITSModel
    gpt_version: str
    sovits_version: str

    @property
    def symbols_version(self) -> str:
        """The phone table both models were trained with ("v1" or "v2")."""
        return "v1" if self.sovits_version == "v1" else "v2"


def gpt_from_checkpoint(ckpt: GPTCheckpoint) -> Text2SemanticModel:
    """Build the GPT architecture the file describes and load its weights."""
    try:
        config = GPTConfig.from_official(ckpt.config) if ckpt.config.get("model") else None
    except ValueError as exc:
        raise CheckpointError(f"{ckpt.path}: unusable training config: {exc}") from exc
    model = Text2SemanticModel(config or GPTConfig.for_version(ckpt.version))
    try:
        model.load_official_state_dict(ckpt.state_dict)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{ckpt.path}: the weights do not fit a GPT-SoVITS {ckpt.version} GPT "
            f"({describe_error(exc)})"
        ) from exc
    return model.eval()


def sovits_from_checkpoint(ckpt: SoVITSCheckpoint) -> SoVITSModel:
    """Build the SoVITS architecture of the file's version and load its weights."""
    model = SoVITSModel.for_version(ckpt.version)
    try:
        model.load_official_state_dict(ckpt.state_dict)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{ckpt.path}: the weights do not fit a GPT-SoVITS {ckpt.version} SoVITS model "
            f"({describe_error(exc)})"
        ) from exc
    return model.eval()


def load_voice_models(
    gpt_path: str | Path, sovits_path: str | Path, device: str | torch.device = "cpu"
) -> VoiceModels:
    """Read, pair-check and build both models of one voice."""
    gpt_ckpt = load_gpt_checkpoint(gpt_path)
    sovits_ckpt = load_sovits_checkpoint(sovits_path)
    check_pair(gpt_ckpt, sovits_ckpt)
    return VoiceModels(
        gpt=gpt_from_checkpoint(gpt_ckpt).to(device),
        sovits=sovits_from_checkpoint(sovits_ckpt).to(device),
        gpt_version=gpt_ckpt.version,
        sovits_version=sovits_ckpt.version,
    )
