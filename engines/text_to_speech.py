"""Text in, audio out, for one prepared voice.

`TextToSpeech` joins the text frontend, BERT and the synthesis of each
segment.  It yields audio segment by segment, so a long text never has to
fit in memory and a player can start on the first segment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from engines.backends.base import VoiceRuntime
from engines.features import BertFeaturizer
from engines.streaming import StreamSettings
from engines.synthesis import SynthesisOptions, VoicePrompt, iter_segment_audio
from engines.text.frontend import PhoneSegment, TextFrontend
from engines.voice_models import VoiceModels
from engines.voice_prompt import segment_bert

log = logging.getLogger(__name__)


@dataclass
class TextToSpeech:
    """One voice, ready to speak: models, frontend, BERT and the reference prompt."""

    voice: VoiceModels | VoiceRuntime
    frontend: TextFrontend
    prompt: VoicePrompt
    bert: BertFeaturizer | None = None

    def prepare(self, text: str, language: str, cut_method: str) -> list[PhoneSegment]:
        """The text's segments (raises TextFrontendError for unspeakable text)."""
        return self.frontend.segments(text, language, cut_method)

    def stream(
        self,
        text: str,
        language: str = "zh",
        cut_method: str = "cut1",
        options: SynthesisOptions | None = None,
        streaming: StreamSettings | None = None,
    ) -> Iterator[np.ndarray]:
        """Audio piece by piece: each segment (in chunks when `streaming`), then a pause."""
        segments = self.prepare(text, language, cut_method)
        log.info("%d segment(s) to synthesise", len(segments))
        inputs = (
            (torch.tensor(s.phone_ids, dtype=torch.long), segment_bert(s, self.bert))
            for s in segments
        )
        yield from iter_segment_audio(
            self.voice, self.prompt, inputs, options or SynthesisOptions(), streaming
        )

    def synthesize(
        self,
        text: str,
        language: str = "zh",
        cut_method: str = "cut1",
        options: SynthesisOptions | None = None,
    ) -> np.ndarray:
        """The whole text as one float32 array at 32 kHz."""
        pieces = list(self.stream(text, language, cut_method, options))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
