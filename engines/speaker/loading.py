"""Read and write the speaker-encoder checkpoint in the official GPT-SoVITS layout.

The official file is `GPT_SoVITS/pretrained_models/sv/pretrained_eres2netv2w24s4ep4.ckpt`.
The reference loads it with `torch.load` and hands the result straight to
`ERes2NetV2.load_state_dict` (strict), so the file is a *plain* state dict
(an OrderedDict of tensors, no wrapper key, no `module.` prefix) holding every
parameter and BatchNorm buffer of the network, the unused 192-d `seg_1` head included.

Loading here uses `weights_only=True` (a model file never runs code), accepts a
file without the `num_batches_tracked` counters (torch itself tolerates that for
metadata-less dicts, and eval mode never reads them), converts float16 to float32,
and turns every problem into a `SpeakerCheckpointError` that names the file and
the fix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from engines.checkpoint_reader import CheckpointError

from .eres2netv2 import ERes2NetV2Config, SpeakerEncoder

#: File name of the official GPT-SoVITS speaker-verification checkpoint.
OFFICIAL_FILENAME = "pretrained_eres2netv2w24s4ep4.ckpt"
#: Where the official repository keeps it, relative to its root.
OFFICIAL_LOCATION = f"GPT_SoVITS/pretrained_models/sv/{OFFICIAL_FILENAME}"

_COUNTER_SUFFIX = ".num_batches_tracked"
_FIX = (
    f"Copy the official GPT-SoVITS file {OFFICIAL_FILENAME} (found under "
    f"GPT_SoVITS/pretrained_models/sv/ in a GPT-SoVITS install) to this path."
)


class SpeakerCheckpointError(CheckpointError):
    """The speaker-encoder file is missing or is not the ERes2NetV2 checkpoint GPT-SoVITS uses."""


def official_key_shapes(cfg: ERes2NetV2Config | None = None) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the official file with its shape, in module order."""
    with torch.device("meta"):
        model = SpeakerEncoder(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _problem(path: Path, what: str) -> SpeakerCheckpointError:
    return SpeakerCheckpointError(f"speaker encoder checkpoint {path}: {what}. {_FIX}")


def _read(path: Path) -> object:
    if not path.is_file():
        raise SpeakerCheckpointError(f"speaker encoder checkpoint not found: {path}. {_FIX}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or foreign file
        raise _problem(path, f"not a readable torch checkpoint ({type(e).__name__}: {e})") from e


def _check_weights(path: Path, raw: object, expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise with a precise message unless `raw` is a plain state dict of the expected network."""
    if not isinstance(raw, Mapping):
        raise _problem(path, f"expected a plain state dict, found a {type(raw).__name__}")
    if not all(isinstance(v, Tensor) for v in raw.values()):
        wrappers = [k for k, v in raw.items() if isinstance(v, Mapping)]
        hint = f" (it wraps the weights under {wrappers[:3]})" if wrappers else ""
        raise _problem(path, f"expected a plain state dict of tensors{hint}")
    missing = [k for k in expected if k not in raw and not k.endswith(_COUNTER_SUFFIX)]
    unexpected = [k for k in raw if k not in expected]
    if missing or unexpected:
        raise _problem(
            path,
            f"not the ERes2NetV2 (w24 s4 e4) speaker encoder: {len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}",
        )
    wrong = [
        f"{k} {tuple(raw[k].shape)} (expected {shape})"
        for k, shape in expected.items()
        if k in raw and tuple(raw[k].shape) != shape
    ]
    if wrong:
        raise _problem(path, f"{len(wrong)} tensors have the wrong shape, e.g. {wrong[:2]}")
    bad = [k for k, v in raw.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise _problem(path, f"{len(bad)} tensors hold NaN or infinity, e.g. {bad[:2]}")


def load_speaker_encoder(
    path: str | Path, device: str | torch.device = "cpu", *, channels_last: bool = True
) -> SpeakerEncoder:
    """The official speaker-encoder file -> `SpeakerEncoder` in eval mode, float32, on `device`.

    `channels_last` (default) stores the conv weights NHWC, which oneDNN runs about 20 %
    faster on CPU; the embedding then differs from the NCHW (reference) layout by
    float32 rounding only (measured: under 1e-5 of its largest value). Pass False to
    get the reference's own layout, which reproduces its CPU output bit for bit.
    """
    path = Path(path)
    raw = _read(path)
    expected = official_key_shapes()
    _check_weights(path, raw, expected)
    assert isinstance(raw, Mapping)
    state: dict[str, Tensor] = {}
    for key in expected:
        if key in raw:
            value = raw[key]
            state[key] = value.to(torch.float32) if value.is_floating_point() else value
        else:  # a missing batch counter: only training reads it
            state[key] = torch.zeros((), dtype=torch.long)
        state[key] = state[key].contiguous()
    with torch.device("meta"):
        model = SpeakerEncoder()
    # `assign` adopts the loaded tensors instead of initialising weights that would be overwritten.
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def save_speaker_checkpoint(path: str | Path, state_dict: Mapping[str, Tensor]) -> Path:
    """Write `state_dict` the way the official file is stored: a plain OrderedDict, float32.

    The keys must be exactly the official ones (batch counters may be left out;
    they are then written as 0), so whatever this writes, the reference loads.
    """
    path = Path(path)
    expected = official_key_shapes()
    _check_weights(path, state_dict, expected)
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key in expected:
        value = state_dict.get(key)
        if value is None:
            value = torch.zeros((), dtype=torch.long)
        elif value.is_floating_point():
            value = value.to(torch.float32)
        out[key] = value.detach().cpu().contiguous().clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return path
