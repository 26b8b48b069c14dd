"""Write GPT `.ckpt` and SoVITS `.pth` files in the official GPT-SoVITS format.

The kiosk's demo voice and the tests need model files that are byte-for-byte
the kind the official trainer writes (float16 tensors, `model.` prefix on GPT
keys, a `utils.HParams` pickle as SoVITS config, a version mark over the zip
header for v2Pro/v2ProPlus), so that the reading code is exercised exactly as
it is with a technician's files.  Files are written to a temporary name in the
target folder and renamed into place, so a power cut never leaves half a file.
"""

from __future__ import annotations

import io
import pickle
import time
import types
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from engines.checkpoint_reader import HEADER_MARKS, SOVITS_VERSIONS
from engines.durable_files import write_atomically
from engines.hparams import PICKLED_NAME, OfficialHParams

_MARK_FOR_VERSION = {v: k for k, v in HEADER_MARKS.items() if v in ("v2Pro", "v2ProPlus")}


class _OfficialNamePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles `OfficialHParams` under the trainer's global name `utils.HParams`."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is OfficialHParams:
            module, _, qualname = PICKLED_NAME.rpartition(".")
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


#: A pickle "module" for `torch.save(pickle_module=...)`.
_OFFICIAL_PICKLE = types.SimpleNamespace(
    __name__="pickle", Pickler=_OfficialNamePickler, dump=pickle.dump
)


def save_gpt_checkpoint(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    info: str | None = "GPT-e1",
) -> Path:
    """Write a GPT `.ckpt` as the trainer does (`info` None: as pretrained files, without it)."""
    container: OrderedDict[str, Any] = OrderedDict()
    container["weight"] = OrderedDict(
        (f"model.{k}", v.detach().to(torch.float16).cpu()) for k, v in state_dict.items()
    )
    container["config"] = dict(config)
    if info is not None:
        container["info"] = info
    # The trainer's own temporary name is "<unix time>.pth"; torch names the zip folder after it.
    return write_atomically(path, lambda tmp: torch.save(container, tmp), f"{time.time()}.pth")


def save_sovits_checkpoint(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    version: str,
    info: str | None = "1epoch_1iteration",
) -> Path:
    """Write a SoVITS `.pth` as the trainer does, version mark included for Pro files."""
    if version not in SOVITS_VERSIONS:
        raise ValueError(f"unknown SoVITS version {version!r}; expected one of {SOVITS_VERSIONS}")
    container: OrderedDict[str, Any] = OrderedDict()
    container["weight"] = {
        k: v.detach().to(torch.float16).cpu() for k, v in state_dict.items() if "enc_q" not in k
    }
    container["config"] = OfficialHParams(**config)
    if info is not None:
        container["info"] = info
    mark = _MARK_FOR_VERSION.get(version)

    def write(tmp: Path) -> None:
        if mark is None:  # the trainer saves straight to a file: zip folder = file stem
            torch.save(container, tmp, pickle_module=_OFFICIAL_PICKLE)
            return
        buffer = io.BytesIO()  # Pro files go through memory ("archive/") and get the mark
        torch.save(container, buffer, pickle_module=_OFFICIAL_PICKLE)
        tmp.write_bytes(mark + buffer.getvalue()[2:])

    return write_atomically(path, write, f"{time.time()}.pth")
