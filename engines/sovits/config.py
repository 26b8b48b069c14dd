"""Architecture hyper-parameters of the SoVITS synthesizer, per model version.

The values are the ones the official `configs/s2*.json` files and the
SynthesizerTrn constructor fix; they decide every tensor shape, so a checkpoint
only loads into a model built from the matching version.
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTED_VERSIONS: tuple[str, ...] = ("v1", "v2", "v2Pro", "v2ProPlus")


@dataclass(frozen=True)
class SoVITSConfig:
    """Every size the SoVITS inference path depends on (defaults = v2)."""

    version: str = "v2"
    # Text side: phone vocabulary (symbols list length of the version).
    n_symbols: int = 732
    # Prior encoder ("enc_p") transformer.
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6  # text encoder depth; the two content encoders use half of it
    kernel_size: int = 3
    window_size: int = 4
    # Multi-reference timbre encoder (MRTE) cross-attention.
    mrte_channels: int = 512
    mrte_heads: int = 4
    # Semantic tokens: HuBERT features and the residual VQ.
    ssl_dim: int = 768
    codebook_size: int = 1024
    n_quantizers: int = 1
    # Timbre conditioning.
    gin_channels: int = 512
    spec_channels: int = 1025
    ref_bins: int = 704  # spectrogram bins fed to the reference encoder
    style_hidden: int = 128
    style_kernel_size: int = 5
    style_heads: int = 2
    sv_dim: int = 0  # speaker-verification embedding size (0 = not used)
    # Normalising flow.
    n_flows: int = 4
    flow_kernel_size: int = 5
    flow_dilation_rate: int = 1
    flow_wn_layers: int = 4
    # HiFi-GAN vocoder.
    upsample_rates: tuple[int, ...] = (10, 8, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 2, 2)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    # Audio framing.
    sampling_rate: int = 32000
    n_fft: int = 2048
    hop_length: int = 640
    win_length: int = 2048

    @property
    def uses_sv_embedding(self) -> bool:
        """v2Pro/v2ProPlus mix a speaker-verification vector into the timbre."""
        return self.sv_dim > 0

    @property
    def samples_per_code(self) -> int:
        """Output samples per 25 Hz semantic code (two 50 Hz frames)."""
        total = 1
        for rate in self.upsample_rates:
            total *= rate
        return 2 * total

    @classmethod
    def for_version(cls, version: str) -> SoVITSConfig:
        """The configuration the official code builds for `version`."""
        if version == "v1":
            return cls(version="v1", n_symbols=322, ref_bins=1025)
        if version == "v2":
            return cls(version="v2")
        if version == "v2Pro":
            return cls(version="v2Pro", gin_channels=1024, sv_dim=20480)
        if version == "v2ProPlus":
            return cls(
                version="v2ProPlus",
                gin_channels=1024,
                sv_dim=20480,
                upsample_initial_channel=768,
                upsample_kernel_sizes=(20, 16, 8, 2, 2),
            )
        raise ValueError(
            f"unsupported SoVITS version {version!r}; expected one of {SUPPORTED_VERSIONS}"
        )
