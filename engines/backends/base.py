"""The interface every synthesis backend implements.

A backend turns a loaded voice (`VoiceModels`, the torch reference) into a
`VoiceRuntime`: a GPT runtime (`engines.gpt.runtime.GPTRuntime`) and a SoVITS
runtime (`SoVITSRuntime` below).  The decoding loop, sampling and synthesis
code never know which backend runs underneath.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from engines.gpt.runtime import GPTRuntime, TorchRuntime
from engines.sovits.synthesizer import Timbre
from engines.voice_models import VoiceModels


class SoVITSRuntime(Protocol):
    """Runs the SoVITS decoder of one voice."""

    def decode(
        self,
        codes: torch.Tensor,
        text_ids: torch.Tensor,
        timbre: Timbre,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """`[1,1,T]` codes + `[1,N]` target phones -> float32 audio `[1,1,T*1280]` (CPU)."""
        ...


@dataclass
class VoiceRuntime:
    """A voice ready to synthesise on one backend."""

    gpt: GPTRuntime
    sovits: SoVITSRuntime
    backend: str
    gpt_version: str
    sovits_version: str


class Backend(Protocol):
    """A way to run voices (torch eager, ONNX Runtime, torch CUDA, TensorRT)."""

    name: str

    def availability(self) -> tuple[bool, str]:
        """Whether it can run here, and why (or why not), for the log."""
        ...

    def load(self, voice: VoiceModels) -> VoiceRuntime:
        """Prepare `voice` on this backend."""
        ...


class TorchEagerBackend:
    """float32 torch on the CPU: the reference every other backend is checked against."""

    name = "torch-eager"

    def availability(self) -> tuple[bool, str]:
        return True, "always available (reference implementation)"

    def load(self, voice: VoiceModels) -> VoiceRuntime:
        return VoiceRuntime(
            TorchRuntime(voice.gpt),
            voice.sovits,
            self.name,
            voice.gpt_version,
            voice.sovits_version,
        )
