"""Turn a reference clip and its transcript into the `VoicePrompt` every utterance uses.

The clip gives three things: semantic prompt tokens (HuBERT at 16 kHz, then
the SoVITS quantizer), the timbre vector (its 32 kHz spectrogram, plus the
speaker-verification embedding for v2Pro/v2ProPlus), and, with its
transcript, the prompt phones and their BERT features.

The official app reads the clip twice, and differently: for HuBERT through
librosa (soxr HQ to 16 kHz, then 0.3 s * 32 000 = 9 600 zeros appended), for
the spectrogram through torchaudio (its windowed-sinc `Resample` to 32 kHz
when the clip has another rate, peak over 1 divided by min(2, peak)), and
for the speaker embedding that 32 kHz clip brought to 16 kHz by the same
sinc resampler.  Both resamplers are reproduced: with soxr on the
spectrogram path too, the output of a v2 voice moved by 0.08 % (RMS) for a
44.1 kHz clip and by 7 % for a 16 kHz one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engines.features import (
    BertFeaturizer,
    FeatureModelError,
    HubertEncoder,
    prompt_tokens,
    read_clip,
    resample,
)
from engines.sovits.spectrogram import normalise_reference_clip, reference_spectrogram
from engines.speaker import SpeakerEncoder, sinc_resample
from engines.synthesis import VoicePrompt
from engines.text.frontend import PhoneSegment, TextFrontend
from engines.text.segmentation import SENTENCE_MARKS
from engines.voice_models import VoiceModels

BERT_DIM = 1024
SPECTROGRAM_RATE = 32000
HUBERT_RATE = 16000


def spectrogram_clip(mono: torch.Tensor, rate: int) -> torch.Tensor:
    """The clip as the app's spectrogram sees it: sinc-resampled to 32 kHz, peak-limited."""
    wav = mono.to(torch.float32)
    if rate != SPECTROGRAM_RATE:
        wav = sinc_resample(wav, rate, SPECTROGRAM_RATE)
    return normalise_reference_clip(wav)


def segment_bert(segment: PhoneSegment, bert: BertFeaturizer | None) -> torch.Tensor:
    """BERT features `[1024, phones]` of a segment: real for Mandarin parts, zeros otherwise."""
    blocks = []
    for part in segment.parts:
        if part.lang == "zh" and part.word2ph is not None and sum(part.word2ph) > 0:
            if bert is None:
                raise FeatureModelError(
                    "Chinese text needs the BERT model: give the chinese-roberta-wwm-ext-large "
                    "folder (--bert DIR)"
                )
            blocks.append(bert.features(part.norm_text, part.word2ph).float().cpu())
        else:
            blocks.append(torch.zeros(BERT_DIM, len(part.phones)))
    return torch.cat(blocks, dim=1) if blocks else torch.zeros(BERT_DIM, 0)


def build_voice_prompt(
    voice: VoiceModels,
    frontend: TextFrontend,
    clip_path: str | Path,
    transcript: str,
    transcript_language: str,
    hubert: HubertEncoder,
    bert: BertFeaturizer | None = None,
    speaker: SpeakerEncoder | None = None,
) -> VoicePrompt:
    """Everything the reference clip contributes, computed once per voice."""
    if voice.sovits.cfg.uses_sv_embedding and speaker is None:
        raise FeatureModelError(
            f"this is a {voice.sovits_version} voice: it needs the speaker-verification model "
            "(--sv pretrained_eres2netv2w24s4ep4.ckpt)"
        )
    transcript = transcript.strip()
    if not transcript:
        raise ValueError("the reference transcript is empty: give the words spoken in the clip")
    if transcript[-1] not in SENTENCE_MARKS:
        transcript += "." if transcript_language == "en" else "。"
    mono, rate = read_clip(clip_path)
    wav16k = torch.from_numpy(resample(mono, rate, HUBERT_RATE))
    with torch.inference_mode():
        tokens = prompt_tokens(hubert, voice.sovits, wav16k)
        wav32k = spectrogram_clip(torch.from_numpy(mono), rate)
        spec = reference_spectrogram(wav32k[None])
        sv = speaker.embed(wav32k[None]) if voice.sovits.cfg.uses_sv_embedding else None
        timbre = voice.sovits.timbre(spec, sv)
    segment = frontend.phones(transcript, transcript_language)
    return VoicePrompt(
        phone_ids=torch.tensor(segment.phone_ids, dtype=torch.long),
        bert=segment_bert(segment, bert),
        semantic_tokens=tokens.reshape(-1).long(),
        timbre=timbre,
    )
