"""Discover the cases of a golden folder and build the models they need.

A golden folder holds `gpt_<ver>[_<case>].npz`, `sovits_<ver>.npz`,
`text_frontend.json` and `keys_shapes.json`, each `.npz` carrying a JSON
`meta` entry with its seed and the exact reference call.  Nothing about a
particular set (seed, sizes, step counts) is assumed: it is all read from the
files, so any set with the same layout can be checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devtools.compat.comparison import Verdict
from devtools.formula_weights import formula_state_dict
from engines.gpt.config import GPTConfig
from engines.gpt.model import Text2SemanticModel
from engines.sovits.synthesizer import SoVITSModel

GOLDEN_FILE = re.compile(r"^(gpt|sovits)_(v1|v2|v2Pro|v2ProPlus)(?:_([a-z0-9]+))?\.npz$")


class GoldenSetError(ValueError):
    """The folder is not a golden set, or one of its files is unreadable."""


@dataclass(frozen=True)
class Case:
    """One line of the report: a name, a kind, and how to decide it."""

    name: str
    kind: str  # "weights" | "gpt" | "sovits" | "text"
    run: Callable[[], Verdict]


def read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and parsed `meta` of one golden file (no pickle is ever needed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as exc:
        raise GoldenSetError(f"{path}: not a readable golden file ({exc})") from exc
    return arrays, meta


def call_arguments(call: str) -> dict[str, float]:
    """Numeric keyword arguments of the recorded reference call, e.g. `top_k=1`."""
    return {k: float(v) for k, v in re.findall(r"(\w+)=(-?\d+(?:\.\d+)?)", call)}


class ModelBank:
    """Formula-weight models, built once per (family, version, seed) and shared by cases."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str, int], torch.nn.Module] = {}

    def gpt(self, version: str, seed: int) -> Text2SemanticModel:
        key = ("gpt", version, seed)
        if key not in self._models:
            model = Text2SemanticModel(GPTConfig.for_version(version)).eval()
            shapes = {f"model.{k}": v.shape for k, v in model.state_dict().items()}
            model.load_official_state_dict(formula_state_dict(shapes, seed))
            self._models[key] = model
        return self._models[key]  # type: ignore[return-value]

    def sovits(self, version: str, seed: int) -> SoVITSModel:
        key = ("sovits", version, seed)
        if key not in self._models:
            model = SoVITSModel.for_version(version).eval()
            shapes = {k: v.shape for k, v in model.state_dict().items()}
            model.load_official_state_dict(formula_state_dict(shapes, seed))
            self._models[key] = model
        return self._models[key]  # type: ignore[return-value]

    @staticmethod
    def official_shapes(family: str, version: str) -> dict[str, tuple[int, ...]]:
        """Official state-dict keys and shapes of a freshly built model of ours."""
        if family == "gpt":
            model: torch.nn.Module = Text2SemanticModel(GPTConfig.for_version(version))
            return {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
        model = SoVITSModel.for_version(version)
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def golden_files(folder: Path) -> list[Path]:
    """The model golden files of a folder, GPT first, in a stable order."""
    if not folder.is_dir():
        raise GoldenSetError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if GOLDEN_FILE.match(p.name))
    return sorted(files, key=lambda p: (not p.name.startswith("gpt"), p.name))
