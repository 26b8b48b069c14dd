"""Read the GPT `.ckpt` and SoVITS `.pth` files that the official GPT-SoVITS trainer writes.

Technicians bring these files unchanged, so this module accepts them exactly as
they are: torch zip archives holding `{"weight", "config", "info"}`, float16
tensors, the GPT's `model.` key prefix, SoVITS configs pickled as
`utils.HParams`, and v2Pro/v2ProPlus files whose first two bytes were
overwritten with a version mark.  Everything is loaded with
`torch.load(weights_only=True)`: a checkpoint never runs code.  The model
version is read from the weights themselves; every problem becomes a
`CheckpointError` that says what is wrong and what to do.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engines.hparams import PICKLED_NAME, OfficialHParams, plain_config

GPT_VERSIONS = ("v1", "v2")
SOVITS_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")

#: Version marks the official saver writes over the zip's leading b"PK".
HEADER_MARKS = {
    b"00": "v1",
    b"01": "v2",
    b"02": "v3",
    b"03": "v3 LoRA",
    b"04": "v4 LoRA",
    b"05": "v2Pro",
    b"06": "v2ProPlus",
}
ZIP_MAGIC = b"PK"

_GPT_TEXT_EMBEDDING = "model.ar_text_embedding.word_embeddings.weight"
_GPT_MARKER = "model.ar_predict_layer.weight"
_SOVITS_TEXT_EMBEDDING = "enc_p.text_embedding.weight"
_GPT_ROWS_TO_VERSION = {512: "v1", 732: "v2"}


class CheckpointError(ValueError):
    """A model file that cannot be used, with the reason and the next step."""


@dataclass(frozen=True)
class ModelCheckpoint:
    """A loaded checkpoint: state dict (GPT keys without `model.`, SoVITS without `enc_q.*`)."""

    path: Path
    version: str
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    info: str | None

    @property
    def symbols_version(self) -> str:
        """Which phone symbol table the model was trained on ("v1" or "v2")."""
        return "v1" if self.version == "v1" else "v2"


class GPTCheckpoint(ModelCheckpoint):
    """A GPT (text-to-semantic) `.ckpt`."""


class SoVITSCheckpoint(ModelCheckpoint):
    """A SoVITS `.pth`."""


def read_container(path: str | Path) -> tuple[dict[str, Any], str | None]:
    """Unpickle an official file safely; return it and the version its header names."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such file. Check the path on the voice pack or USB stick."
        )
    data = path.read_bytes()
    if len(data) < 4:
        raise CheckpointError(f"{path}: the file is empty or truncated ({len(data)} bytes).")
    head = data[:2]
    header_version = None
    if head != ZIP_MAGIC:
        if head not in HEADER_MARKS:
            raise CheckpointError(
                f"{path}: not a GPT-SoVITS checkpoint (it starts with {head!r}, expected a torch "
                "zip archive). Bring the .ckpt/.pth files exactly as the GPT-SoVITS trainer "
                "wrote them."
            )
        header_version = HEADER_MARKS[head]
        data = ZIP_MAGIC + data[2:]
    try:
        with torch.serialization.safe_globals([(OfficialHParams, PICKLED_NAME)]):
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: holds Python objects that cannot be loaded safely ({describe_error(exc)}). "
            "Re-export the model with the official GPT-SoVITS tools."
        ) from exc
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: cannot be read as a torch checkpoint; it is probably truncated or damaged "
            f"({describe_error(exc)}). Copy the file again from the original."
        ) from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("weight"), dict):
        raise CheckpointError(
            f"{path}: a torch file, but not a GPT-SoVITS checkpoint (no 'weight' dictionary)."
        )
    weights = obj["weight"]
    bad = [k for k, v in weights.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path}: 'weight' holds non-tensor entries, e.g. {bad[0]!r}.")
    return obj, header_version


def checkpoint_kind(weights: dict[str, torch.Tensor]) -> str | None:
    """'gpt', 'sovits', or None, judged from the state-dict keys."""
    if _GPT_MARKER in weights:
        return "gpt"
    if _SOVITS_TEXT_EMBEDDING in weights:
        return "sovits"
    return None


def load_gpt_checkpoint(path: str | Path, dtype: torch.dtype = torch.float32) -> GPTCheckpoint:
    """Load an official GPT `.ckpt` (weights converted to `dtype`)."""
    path = Path(path)
    obj, header_version = read_container(path)
    weights = obj["weight"]
    kind = checkpoint_kind(weights)
    if kind != "gpt":
        raise CheckpointError(_wrong_kind(path, expected="gpt", found=kind))
    if header_version is not None:
        raise CheckpointError(f"{path}: carries a SoVITS version mark; it is not a GPT file.")
    rows = int(weights[_GPT_TEXT_EMBEDDING].shape[0])
    if rows not in _GPT_ROWS_TO_VERSION:
        raise CheckpointError(
            f"{path}: phone embedding has {rows} rows; GPT-SoVITS v1 has 512 and v2 has 732. "
            "Only v1/v2/v2Pro/v2ProPlus GPT models are supported."
        )
    state = {k.removeprefix("model."): v.to(dtype) for k, v in weights.items()}
    info = obj.get("info")
    return GPTCheckpoint(
        path,
        _GPT_ROWS_TO_VERSION[rows],
        state,
        plain_config(obj.get("config")),
        info if isinstance(info, str) else None,
    )


def load_sovits_checkpoint(
    path: str | Path, dtype: torch.dtype = torch.float32
) -> SoVITSCheckpoint:
    """Load an official SoVITS `.pth` (weights converted to `dtype`, `enc_q.*` dropped)."""
    path = Path(path)
    obj, header_version = read_container(path)
    if header_version in ("v3", "v3 LoRA", "v4 LoRA"):
        raise CheckpointError(
            f"{path}: a GPT-SoVITS {header_version} model. This kiosk runs v1, v2, v2Pro and "
            "v2ProPlus voices; train the voice with one of those."
        )
    weights = obj["weight"]
    kind = checkpoint_kind(weights)
    if kind != "sovits":
        raise CheckpointError(_wrong_kind(path, expected="sovits", found=kind))
    version = sovits_version_from_weights(path, weights)
    if header_version is not None and header_version != version:
        raise CheckpointError(
            f"{path}: the file header says {header_version} but the weights are {version}; "
            "the file was altered. Copy it again from the trainer's output."
        )
    state = {k: v.to(dtype) for k, v in weights.items() if "enc_q" not in k}
    info = obj.get("info")
    return SoVITSCheckpoint(
        path,
        version,
        state,
        plain_config(obj.get("config")),
        info if isinstance(info, str) else None,
    )


def sovits_version_from_weights(path: Path, weights: dict[str, torch.Tensor]) -> str:
    """v1/v2 by the phone table, Pro by the speaker-embedding input, Plus by decoder width."""
    rows = int(weights[_SOVITS_TEXT_EMBEDDING].shape[0])
    if rows == 322:
        return "v1"
    if rows != 732:
        raise CheckpointError(
            f"{path}: phone embedding has {rows} rows; expected 322 (v1) or 732 (v2 and later)."
        )
    if "sv_emb.weight" not in weights:
        return "v2"
    conv_pre = weights.get("dec.conv_pre.weight")
    if conv_pre is None:
        raise CheckpointError(f"{path}: the decoder weights (dec.*) are missing.")
    return "v2ProPlus" if int(conv_pre.shape[0]) == 768 else "v2Pro"


def check_pair(gpt: GPTCheckpoint, sovits: SoVITSCheckpoint) -> None:
    """Refuse a GPT and a SoVITS model trained for different phone tables."""
    if gpt.symbols_version != sovits.symbols_version:
        raise CheckpointError(
            f"{gpt.path.name} is a GPT {gpt.version} model but {sovits.path.name} is a SoVITS "
            f"{sovits.version} model; they do not belong together. Use the GPT and SoVITS files "
            "from the same training run."
        )


def _wrong_kind(path: Path, expected: str, found: str | None) -> str:
    names = {"gpt": "GPT (.ckpt)", "sovits": "SoVITS (.pth)"}
    if found is None:
        return f"{path}: neither a GPT nor a SoVITS model of GPT-SoVITS (unknown weight names)."
    return (
        f"{path}: this is a {names[found]} file, but a {names[expected]} file was expected. "
        "Check that the GPT and SoVITS files were not swapped."
    )


def describe_error(exc: BaseException) -> str:
    """The first line of an exception message, short enough for a log line."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
