"""Checks and quiet, offline loading for Hugging Face model folders.

transformers happily initialises random weights for tensors a checkpoint lacks
and only logs it; for a kiosk that would mean silently wrong voices. So the
folder is checked before loading (with a message that says what to install
where) and the loading report is checked after it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import FeatureModelError

#: Where the reference project keeps its helper models; used in error messages.
PRETRAINED_DIR_HINT = "GPT_SoVITS/pretrained_models"

WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class ModelSpec:
    """What a helper folder must contain, and how to tell the user to get it."""

    role: str  # e.g. "BERT text features"
    official_name: str  # e.g. "hfl/chinese-roberta-wwm-ext-large"
    model_type: str  # config.json "model_type"

    @property
    def folder_name(self) -> str:
        return self.official_name.split("/")[-1]

    def install_hint(self) -> str:
        return (
            f"install the {self.official_name} model (config.json, weights and, for BERT, "
            f"tokenizer files) into a folder such as {PRETRAINED_DIR_HINT}/{self.folder_name}/ "
            "and pass that folder"
        )

    def error(self, folder: Path, problem: str) -> FeatureModelError:
        return FeatureModelError(f"{self.role} model at {folder}: {problem}; {self.install_hint()}")


def check_folder(path: str | Path, spec: ModelSpec, extra: Iterable[tuple[str, ...]] = ()) -> Path:
    """Validate a model folder without loading it; return its resolved path.

    `extra` lists further requirements, each a tuple of alternative file names
    of which at least one must exist.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise spec.error(folder, "folder not found")
    folder = folder.resolve()
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise spec.error(folder, "config.json is missing")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise spec.error(folder, f"config.json is not readable JSON ({exc})") from exc
    if not _is_model_type(config, spec.model_type):
        found = config.get("model_type") if isinstance(config, dict) else None
        raise spec.error(
            folder, f"config.json has model_type {found!r}, expected {spec.model_type!r}"
        )
    for alternatives in ((*WEIGHT_FILES,), *extra):
        if not any((folder / name).is_file() for name in alternatives):
            raise spec.error(folder, f"none of {', '.join(alternatives)} is present")
    return folder


def _is_model_type(config: object, model_type: str) -> bool:
    """model_type matches, or (older exports) is absent and an architecture name does."""
    if not isinstance(config, dict):
        return False
    found = config.get("model_type")
    if found is not None:
        return found == model_type
    archs = config.get("architectures") or []
    return any(str(a).lower().startswith(model_type) for a in archs)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and load reports for the duration.

    The reports (e.g. the unused masked-LM head of the BERT checkpoint) would
    clutter the kiosk log at every start; real problems are raised instead.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_pretrained(
    model_cls: Any,
    folder: Path,
    spec: ModelSpec,
    allowed_missing: Iterable[str] = (),
    **kwargs: Any,
) -> Any:
    """`model_cls.from_pretrained` offline in float32, failing on any missing tensor.

    float32 is requested explicitly: transformers >= 5 would otherwise keep
    fp16-stored weights in fp16, while the reference runs float32 on CPU.
    """
    try:
        with quiet_transformers():
            model, info = model_cls.from_pretrained(
                str(folder),
                local_files_only=True,
                dtype=torch.float32,
                output_loading_info=True,
                **kwargs,
            )
    except Exception as exc:  # transformers raises many kinds for a broken folder
        raise spec.error(folder, f"could not be loaded ({type(exc).__name__}: {exc})") from exc
    allowed = set(allowed_missing)
    missing = sorted(k for k in info.get("missing_keys", ()) if k not in allowed)
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing or mismatched:
        shown = ", ".join((missing + mismatched)[:5])
        raise spec.error(
            folder,
            f"the weights do not fit the architecture ({len(missing)} missing, "
            f"{len(mismatched)} mismatched tensors, e.g. {shown})",
        )
    model.eval()
    model.requires_grad_(False)
    return model
