"""SoVITS graphs: the prior encoder, and prior sampling + flow + vocoder.

The decoder is cut where the speed change happens.  `SoVITSEncoderGraph`
stops right after `enc_p.encoder2` (before the speed stretch and the 1x1
`proj`); the host applies `stretch_frames` (a cheap linear resampling, the very
function eager torch runs) when speed != 1, so one pair of graphs serves every
speed and the length arithmetic `int(T/speed)+1` never enters a graph.
`SoVITSFlowVocoderGraph` then does `proj`, `z_p = m + noise*exp(logs)*noise_scale`,
the reverse flow and HiFi-GAN.  It is purely convolutional in time, so a later
streaming step can run it on overlapping chunks.  The noise is an input: the
host draws it from the caller's generator exactly as eager torch does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from engines.sovits.synthesizer import SoVITSModel, Timbre
from engines.sovits.text_encoder import stretch_frames

if TYPE_CHECKING:
    from engines.streaming import StagedSoVITS


def prior_frames(num_codes: int, speed: float) -> int:
    """Frames of the prior latent for `num_codes` 25 Hz codes at `speed`."""
    frames = 2 * num_codes
    return frames if speed == 1 else int(frames / speed) + 1


class SoVITSEncoderGraph(nn.Module):
    """`codes [1,1,T]`, `text_ids [1,N]`, `ge_text [1,512,1]` -> `content [1,192,2T]`."""

    input_names = ("codes", "text_ids", "ge_text")
    output_names = ("content",)

    def __init__(self, model: SoVITSModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: Tensor, text_ids: Tensor, ge_text: Tensor) -> Tensor:
        enc = self.model.enc_p
        frames = self.model.quantizer.decode(codes).repeat_interleave(2, dim=-1)
        x = enc.encoder_ssl(enc.ssl_proj(frames))
        phones = enc.encoder_text(enc.text_embedding(text_ids).transpose(1, 2))
        return enc.encoder2(enc.mrte(x, phones, ge_text))


class SoVITSFlowVocoderGraph(nn.Module):
    """`content [1,192,T']`, `noise [1,192,T']`, `noise_scale [1]`, `ge [1,gin,1]` -> audio.

    Audio is `[1, 1, T'*640]`.  The frame mask is all ones (one utterance, no
    padding), so it is left out.
    """

    input_names = ("content", "noise", "noise_scale", "ge")
    output_names = ("audio",)

    def __init__(self, model: SoVITSModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, content: Tensor, noise: Tensor, noise_scale: Tensor, ge: Tensor) -> Tensor:
        m = self.model
        m_p, logs_p = torch.split(m.enc_p.proj(content), m.enc_p.out_channels, dim=1)
        z_p = m_p + noise * torch.exp(logs_p) * noise_scale
        return m.vocode(m.flow.reverse(z_p, ge), ge)


def stretch_content(content: Tensor, speed: float) -> Tensor:
    """The host-side speed change between the two graphs (eager's own function)."""
    return stretch_frames(content, speed)


def decode_staged(
    runtime: StagedSoVITS,
    codes: Tensor,
    text_ids: Tensor,
    timbre: Timbre,
    speed: float,
    noise_scale: float,
    generator: torch.Generator | None,
    noise_channels: int,
) -> Tensor:
    """A whole utterance through the two graphs, with the host work between them.

    The prior noise is drawn on the CPU in float32 from the caller's generator
    with the very call eager torch makes (`randn` of the prior's shape), and not
    at all for noise_scale 0, so every backend consumes the generator alike.
    """
    content = runtime.content(codes, text_ids, timbre.ge_text)
    if speed != 1:
        content = stretch_content(content.float(), speed)
    assert content.shape[-1] == prior_frames(codes.shape[-1], speed)
    shape = (1, noise_channels, content.shape[-1])
    if noise_scale == 0:
        noise = torch.zeros(shape)
    else:
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    return runtime.render(content, noise, noise_scale, timbre.ge)
