"""SoVITS synthesizer (inference only): semantic codes + phones + timbre -> 32 kHz audio.

Decoding is split into the stages a streaming/exported runtime needs:
`encode` (prior statistics) -> `sample_prior` -> `flow_reverse` -> `vocode`.
The state dict matches the official SynthesizerTrn without the posterior
encoder `enc_q.*`, which inference never uses (the webui drops it too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .config import SoVITSConfig
from .flow import CouplingFlow
from .hifigan import HiFiGANGenerator
from .quantizer import ResidualQuantizer
from .ref_encoder import StyleEncoder
from .text_encoder import TextEncoder
from .weight_norm import fold_all

_DROPPED_PREFIXES = ("enc_q.",)


class Timbre(NamedTuple):
    """Speaker conditioning derived once per reference clip.

    ge:      [B, gin, 1] what the flow and the vocoder are conditioned on.
    ge_text: [B, 512, 1] what MRTE adds (ge itself for v1/v2, ge_to512(ge) for Pro).
    ge_ref:  [B, gin, 1] raw reference-encoder output, before any SV mixing.
    sv_proj: [B, gin] projected speaker-verification embedding (Pro only, else None).
    """

    ge: Tensor
    ge_text: Tensor
    ge_ref: Tensor
    sv_proj: Tensor | None = None


@dataclass
class DecodeResult:
    """Intermediates of one decode, for tests and debugging."""

    m_p: Tensor  # [1, 192, T'] prior mean
    logs_p: Tensor  # [1, 192, T'] prior log-std
    y_mask: Tensor  # [1, 1, T'] frame mask (all ones)
    z_p: Tensor  # [1, 192, T'] sampled prior latent
    z: Tensor  # [1, 192, T'] flow output, vocoder input
    audio: Tensor  # [1, 1, T' * 640]


class SoVITSModel(nn.Module):
    """Inference-only GPT-SoVITS SynthesizerTrn for v1, v2, v2Pro and v2ProPlus."""

    def __init__(self, cfg: SoVITSConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Attribute order fixes the state-dict key order; it follows the official one.
        self.enc_p = TextEncoder(cfg)
        self.dec = HiFiGANGenerator(cfg)
        self.flow = CouplingFlow(cfg)
        self.ref_enc = StyleEncoder(cfg)
        # 50 Hz HuBERT frames -> 25 Hz (kernel 2, stride 2) before quantisation.
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, cfg.ssl_dim, 2, stride=2)
        self.quantizer = ResidualQuantizer(cfg.ssl_dim, cfg.codebook_size, cfg.n_quantizers)
        if cfg.uses_sv_embedding:
            self.sv_emb = nn.Linear(cfg.sv_dim, cfg.gin_channels)
            self.ge_to512 = nn.Linear(cfg.gin_channels, cfg.mrte_channels)
            self.prelu = nn.PReLU(num_parameters=cfg.gin_channels)

    @classmethod
    def for_version(cls, version: str) -> SoVITSModel:
        return cls(SoVITSConfig.for_version(version))

    # ------------------------------------------------------------------ weights
    def load_official_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Strictly load an official SynthesizerTrn state dict (any float dtype).

        `enc_q.*` keys are dropped; tensors are cast to this model's float32 because
        checkpoints store float16 and the reference runs float32 on CPU.
        """
        kept = {
            k: v.to(torch.float32)
            for k, v in state_dict.items()
            if not k.startswith(_DROPPED_PREFIXES)
        }
        self.load_state_dict(kept, strict=True)

    def fold_weight_norm(self) -> int:
        """Bake every weight-norm pair into a plain weight (same outputs, fewer ops)."""
        return fold_all(self)

    # ------------------------------------------------------------------ timbre
    def timbre(self, spec: Tensor, sv_emb: Tensor | None = None) -> Timbre:
        """Reference spectrogram [B,1025,F] (+ SV embedding [B,20480] for Pro) -> Timbre."""
        ge_ref = self.ref_enc(spec[:, : self.cfg.ref_bins])
        if not self.cfg.uses_sv_embedding:
            return Timbre(ge=ge_ref, ge_text=ge_ref, ge_ref=ge_ref)
        if sv_emb is None:
            raise ValueError(
                f"SoVITS {self.cfg.version} needs a speaker-verification embedding "
                f"(sv_emb, shape [B, {self.cfg.sv_dim}]) to compute the timbre"
            )
        sv_proj = self.sv_emb(sv_emb)
        ge = self.prelu(ge_ref + sv_proj.unsqueeze(-1))
        return Timbre(ge=ge, ge_text=self._ge_for_text(ge), ge_ref=ge_ref, sv_proj=sv_proj)

    def average_timbre(self, timbres: Sequence[Timbre]) -> Timbre:
        """Mean of several references, as the reference does for a list of clips.

        The mean is taken over `ge`; for Pro the 512-d MRTE vector is recomputed
        from the averaged `ge` (the projection is applied after averaging).
        """
        if not timbres:
            raise ValueError("average_timbre needs at least one Timbre")
        ge = torch.stack([t.ge for t in timbres]).mean(0)
        ge_ref = torch.stack([t.ge_ref for t in timbres]).mean(0)
        if not self.cfg.uses_sv_embedding:
            return Timbre(ge=ge, ge_text=ge, ge_ref=ge_ref)
        return Timbre(ge=ge, ge_text=self._ge_for_text(ge), ge_ref=ge_ref)

    def _ge_for_text(self, ge: Tensor) -> Tensor:
        return self.ge_to512(ge.transpose(1, 2)).transpose(1, 2)

    # ------------------------------------------------------------------ tokens
    def extract_latent(self, ssl: Tensor) -> Tensor:
        """HuBERT features [B,768,T50] -> semantic codes [B, n_q, T25] (int64)."""
        return self.quantizer.encode(self.ssl_proj(ssl)).transpose(0, 1)

    # ------------------------------------------------------------------ decode stages
    def encode(
        self, codes: Tensor, text_ids: Tensor, ge_text: Tensor, speed: float = 1.0
    ) -> tuple[Tensor, Tensor, Tensor]:
        """codes [n_q,1,T25], text_ids [1,N], ge_text [1,512,1] -> (m_p, logs_p, y_mask).

        Codes become 768-d codewords, repeated to 50 Hz, then go through enc_p.
        """
        content = self.quantizer.decode(codes).repeat_interleave(2, dim=-1)
        return self.enc_p(content, text_ids, ge_text, speed)

    def content(self, codes: Tensor, text_ids: Tensor, ge_text: Tensor) -> Tensor:
        """Encoder frames `[1,192,2T]` at speed 1, before `proj` (for streaming windows)."""
        semantic = self.quantizer.decode(codes).repeat_interleave(2, dim=-1)
        return self.enc_p.hidden(semantic, text_ids, ge_text)

    def render(self, content: Tensor, noise: Tensor, noise_scale: float, ge: Tensor) -> Tensor:
        """A window of encoder frames (+ its prior noise) to audio `[1,1,F*640]`."""
        m_p, logs_p = torch.split(self.enc_p.proj(content), self.cfg.inter_channels, dim=1)
        z_p = self.sample_prior(m_p, logs_p, noise_scale, noise=noise)
        mask = torch.ones_like(content[:, :1, :])
        return self.vocode(self.flow_reverse(z_p, mask, ge), ge)

    @staticmethod
    def sample_prior(
        m_p: Tensor,
        logs_p: Tensor,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """z_p = m_p + eps * exp(logs_p) * noise_scale, eps ~ N(0, 1).

        `noise` lets a caller (or an exported graph) supply eps; otherwise it is drawn
        from `generator`. noise_scale 0 returns m_p exactly, with no draw.
        """
        if noise is None:
            if noise_scale == 0:
                return m_p.clone()
            noise = torch.randn(m_p.shape, generator=generator, dtype=m_p.dtype, device=m_p.device)
        return m_p + noise * torch.exp(logs_p) * noise_scale

    def flow_reverse(self, z_p: Tensor, y_mask: Tensor, ge: Tensor) -> Tensor:
        """Prior latent -> decoder latent, conditioned on the timbre."""
        return self.flow.reverse(z_p, ge) * y_mask

    def vocode(self, z: Tensor, ge: Tensor) -> Tensor:
        """Decoder latent [1,192,T'] -> audio [1,1,T'*640]."""
        return self.dec(z, ge)

    # ------------------------------------------------------------------ full decode
    def decode_with_intermediates(
        self,
        codes: Tensor,
        text_ids: Tensor,
        timbre: Timbre,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> DecodeResult:
        """Like `decode`, keeping every stage's output."""
        m_p, logs_p, y_mask = self.encode(codes, text_ids, timbre.ge_text, speed)
        z_p = self.sample_prior(m_p, logs_p, noise_scale, generator)
        z = self.flow_reverse(z_p, y_mask, timbre.ge)
        audio = self.vocode(z, timbre.ge)
        return DecodeResult(m_p=m_p, logs_p=logs_p, y_mask=y_mask, z_p=z_p, z=z, audio=audio)

    def decode(
        self,
        codes: Tensor,
        text_ids: Tensor,
        timbre: Timbre,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Semantic codes [1,1,T] + target phone ids [1,N] -> audio [1,1,T*1280] at 32 kHz."""
        return self.decode_with_intermediates(
            codes, text_ids, timbre, speed, noise_scale, generator
        ).audio
