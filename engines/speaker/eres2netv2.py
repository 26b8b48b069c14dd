"""ERes2NetV2 speaker-verification network, configured as GPT-SoVITS v2Pro/v2ProPlus use it.

GPT-SoVITS builds the 3D-Speaker ERes2NetV2 with `baseWidth=24, scale=4,
expansion=4` and otherwise default settings (64 stem channels, blocks [3, 4, 6, 3],
80 fbank bins, TSTP pooling into a 192-d `seg_1`, one embedding layer). It does
not use the 192-d x-vector: it takes the fused last-stage feature map
[B, 2048, 10, T/8] and averages it over time after flattening channels and
frequency (channel-major), giving 20 480 numbers per clip.

Attribute names follow the official module tree because the checkpoint's
state-dict keys are derived from them; the code itself is an independent rewrite.
Numerical details that matter:

* inside the residual blocks the activation is a ReLU clipped at 20 (hardtanh 0..20),
  while the stem uses a plain ReLU;
* the split-and-add ("Res2Net") branches feed each 3x3 conv with the previous
  branch's output combined with the next channel slice: a plain sum in stages 1-2,
  an attentional fusion (AFF) in stages 3-4;
* AFF: `a = 1 + tanh(local_att([x, y]))`, output `x * a + y * (2 - a)`;
* stage 3's output is downsampled by a 3x3 stride-2 conv and fused with stage 4's
  output by another AFF.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embedding import sv_features

#: Upper clip of the ReLU used inside the residual blocks.
_RELU_CLIP = 20.0


def _clipped_relu(x: Tensor) -> Tensor:
    """In place: the inputs are fresh BatchNorm outputs, and the 80-row early maps are large."""
    return F.hardtanh(x, 0.0, _RELU_CLIP, inplace=True)


@dataclass(frozen=True)
class ERes2NetV2Config:
    """Hyper-parameters of the network; the defaults are GPT-SoVITS' `sv.py` choice."""

    base_width: int = 24
    scale: int = 4
    expansion: int = 4
    m_channels: int = 64
    num_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    feat_dim: int = 80
    xvector_dim: int = 192

    @property
    def fused_channels(self) -> int:
        """Channels of the last-stage feature map (2048 for the default config)."""
        return self.m_channels * 8 * self.expansion

    @property
    def embedding_dim(self) -> int:
        """Size of the time-averaged embedding: channels x remaining fbank rows (20 480)."""
        return self.fused_channels * (self.feat_dim // 8)


class AttentionalFusion(nn.Module):
    """AFF: a per-position gate in (0, 2) that mixes two same-shaped maps.

    The convs keep their bias and sit at slots 0 and 3 of `local_att`
    (BatchNorm at 1 and 4, SiLU at 2) so the keys match the checkpoint.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        inner = channels // reduction
        self.local_att = nn.Sequential(
            nn.Conv2d(2 * channels, inner, kernel_size=1),
            nn.BatchNorm2d(inner),
            nn.SiLU(),
            nn.Conv2d(inner, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        gate = 1.0 + torch.tanh(self.local_att(torch.cat((x, y), dim=1)))
        return x * gate + y * (2.0 - gate)


class Res2Bottleneck(nn.Module):
    """1x1 conv -> `scale` chained 3x3 branches -> 1x1 conv, plus a shortcut.

    `fused=True` joins consecutive branches with AFF instead of a sum (stages 3-4).
    """

    def __init__(
        self, in_planes: int, planes: int, stride: int, cfg: ERes2NetV2Config, fused: bool
    ) -> None:
        super().__init__()
        width = planes * cfg.base_width // 64  # floor(planes * baseWidth / 64)
        out_planes = planes * cfg.expansion
        self.width = width
        self.scale = cfg.scale
        self.conv1 = nn.Conv2d(in_planes, width * cfg.scale, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width * cfg.scale)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(cfg.scale)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(cfg.scale))
        # Empty (no state-dict keys) in the plain blocks.
        self.fuse_models = nn.ModuleList(
            AttentionalFusion(width) for _ in range(cfg.scale - 1 if fused else 0)
        )
        self.conv3 = nn.Conv2d(width * cfg.scale, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        slices = torch.split(_clipped_relu(self.bn1(self.conv1(x))), self.width, dim=1)
        branches: list[Tensor] = []
        carry = slices[0]
        for i in range(self.scale):
            if i > 0 and self.fuse_models:
                carry = self.fuse_models[i - 1](branches[-1], slices[i])
            elif i > 0:
                carry = branches[-1] + slices[i]
            branches.append(_clipped_relu(self.bns[i](self.convs[i](carry))))
        out = self.bn3(self.conv3(torch.cat(branches, dim=1)))
        out += self.shortcut(x)
        return _clipped_relu(out)


class SpeakerEncoder(nn.Module):
    """ERes2NetV2 trunk plus the official (unused here) 192-d head, in checkpoint layout.

    `seg_1` is kept so the official checkpoint loads key-for-key; `xvector` uses it.
    """

    def __init__(self, cfg: ERes2NetV2Config | None = None) -> None:
        super().__init__()
        cfg = cfg or ERes2NetV2Config()
        self.cfg = cfg
        m = cfg.m_channels
        self.conv1 = nn.Conv2d(1, m, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        in_planes = m
        stages = []
        for i, blocks in enumerate(cfg.num_blocks):
            planes = m * 2**i
            layer = []
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layer.append(Res2Bottleneck(in_planes, planes, stride, cfg, fused=i >= 2))
                in_planes = planes * cfg.expansion
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.layer3_ds = nn.Conv2d(
            m * 4 * cfg.expansion, cfg.fused_channels, 3, stride=2, padding=1, bias=False
        )
        self.fuse34 = AttentionalFusion(cfg.fused_channels)
        # TSTP (mean and std over time) of the flattened map feeds this layer.
        self.seg_1 = nn.Linear(2 * cfg.embedding_dim, cfg.xvector_dim)

    @property
    def embedding_dim(self) -> int:
        return self.cfg.embedding_dim

    def feature_map(self, feats: Tensor) -> Tensor:
        """[B, T, feat_dim] fbank -> [B, 2048, feat_dim/8, ~T/8] fused last-stage map."""
        x = feats.transpose(1, 2).unsqueeze(1)  # one input plane: [B, 1, F, T]
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        stage3 = self.layer3(x)
        stage4 = self.layer4(stage3)
        return self.fuse34(stage4, self.layer3_ds(stage3))

    def forward(self, feats: Tensor) -> Tensor:
        """[B, T, feat_dim] fbank -> [B, 20480]: the map flattened channel-major, mean over time.

        This is the reference's `forward3`, the vector GPT-SoVITS feeds its `sv_emb` layer.
        """
        return self.feature_map(feats).flatten(1, 2).mean(dim=-1)

    def xvector(self, feats: Tensor) -> Tensor:
        """[B, T, feat_dim] fbank -> [B, 192] speaker-verification x-vector (official `forward`)."""
        flat = self.feature_map(feats).flatten(1, 2)
        stats = torch.cat((flat.mean(dim=-1), torch.sqrt(flat.var(dim=-1) + 1e-8)), dim=1)
        return self.seg_1(stats)

    @torch.no_grad()
    def embed(self, wav32k: Tensor) -> Tensor:
        """[B, N] (or [N]) 32 kHz waveform in [-1, 1] -> [B, 20480] float32 embedding.

        Resample to 16 kHz, Kaldi fbank per clip, then `forward`, as GPT-SoVITS does.
        `no_grad` rather than `inference_mode`, so callers may feed the result to modules
        that are not in inference mode.
        """
        param = self.conv1.weight
        feats = sv_features(wav32k.to(device=param.device))
        return self(feats.to(param.dtype)).float()
