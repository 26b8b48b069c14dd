"""Reading and writing official GPT-SoVITS checkpoint containers.

The samples in the golden folder are complete files written by the official
trainer's own saver, so they test the reader against the real thing; the
writer's output is compared with them structurally.
"""

from __future__ import annotations

import argparse
import base64
import json
import pickletools
import zipfile
from pathlib import Path

import pytest
import torch

from devtools.checkpoint_writer import save_gpt_checkpoint, save_sovits_checkpoint
from engines.checkpoint_reader import (
    CheckpointError,
    load_gpt_checkpoint,
    load_sovits_checkpoint,
    read_container,
)
from engines.gpt.config import GPTConfig


@pytest.fixture(scope="module")
def samples(compat_dir: Path) -> dict:
    return json.loads((compat_dir / "keys_shapes.json").read_text())["container"]["samples"]


def _write_sample(samples: dict, name: str, folder: Path) -> Path:
    path = folder / f"{name}.bin"
    path.write_bytes(base64.b64decode(samples[name]["base64"]))
    return path


def _pickle_globals(path: Path) -> set[str]:
    with zipfile.ZipFile(path if path.read_bytes()[:2] == b"PK" else _unmarked(path)) as zf:
        pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        data = zf.read(pkl)
    found = set()
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
    return found


def _unmarked(path: Path) -> Path:
    fixed = path.with_suffix(".zip")
    fixed.write_bytes(b"PK" + path.read_bytes()[2:])
    return fixed


@pytest.mark.parametrize("name", ["sovits_v2", "sovits_v2Pro", "sovits_v2ProPlus"])
def test_official_sovits_samples_open(samples: dict, name: str, tmp_path: Path) -> None:
    path = _write_sample(samples, name, tmp_path)
    obj, header_version = read_container(path)
    assert header_version == {"sovits_v2": None}.get(name, name.removeprefix("sovits_"))
    assert set(obj) == {"weight", "config", "info"}
    assert all(t.dtype == torch.float16 for t in obj["weight"].values())
    assert not any("enc_q" in k for k in obj["weight"])
    config = obj["config"]
    assert config.to_dict()["model"]["version"] == name.removeprefix("sovits_")


def test_our_gpt_config_is_the_official_one(samples: dict, tmp_path: Path) -> None:
    obj, _ = read_container(_write_sample(samples, "gpt_v2", tmp_path))
    assert GPTConfig.for_version("v2").to_official() == obj["config"]


def test_official_gpt_sample_opens(samples: dict, tmp_path: Path) -> None:
    obj, header_version = read_container(_write_sample(samples, "gpt_v2", tmp_path))
    assert header_version is None
    assert obj["config"]["model"]["phoneme_vocab_size"] == 732
    assert obj["info"].startswith("GPT-e")
    assert all(k.startswith("model.") for k in obj["weight"])


@pytest.mark.parametrize("name", ["sovits_v2", "sovits_v2Pro", "gpt_v2"])
def test_writer_matches_official_container_layout(samples: dict, name: str, tmp_path: Path) -> None:
    official = _write_sample(samples, name, tmp_path)
    obj, _ = read_container(official)
    weights = {k.removeprefix("model."): v for k, v in obj["weight"].items()}
    ours = tmp_path / f"ours_{name}.pth"
    if name.startswith("gpt"):
        save_gpt_checkpoint(ours, weights, obj["config"], obj["info"])
    else:
        save_sovits_checkpoint(
            ours, weights, obj["config"].to_dict(), name.removeprefix("sovits_"), obj["info"]
        )
    assert ours.read_bytes()[:2] == official.read_bytes()[:2]
    assert _pickle_globals(ours) == set(samples[name]["pickle_globals"])
    again, _ = read_container(ours)
    assert again["info"] == obj["info"]
    for key, value in obj["weight"].items():
        assert torch.equal(again["weight"][key], value)
    official_dirs = {n.split("/")[0] for n in zipfile.ZipFile(_unmarked(official)).namelist()}
    our_dirs = {n.split("/")[0] for n in zipfile.ZipFile(_unmarked(ours)).namelist()}
    # The trainer saves v1/v2 files through a "<unix time>.pth" temp file, Pro files via memory.
    assert (official_dirs == {"archive"}) == (our_dirs == {"archive"})


def test_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        load_gpt_checkpoint(tmp_path / "missing.ckpt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty or truncated"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "not a GPT-SoVITS checkpoint"),
        (b"PK\x03\x04garbage" * 10, "truncated or damaged"),
    ],
)
def test_wrong_file_types(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_sovits_checkpoint(path)


def test_truncated_official_file(samples: dict, tmp_path: Path) -> None:
    path = _write_sample(samples, "sovits_v2Pro", tmp_path)
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_sovits_checkpoint(path)


def test_plain_torch_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save({"state_dict": {"a": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="no 'weight' dictionary"):
        load_gpt_checkpoint(path)


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.ckpt"
    torch.save({"weight": {}, "config": argparse.Namespace(lr=1)}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_gpt_checkpoint(path)


def test_v3_mark_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "v3.pth"
    save_sovits_checkpoint(path, {"enc_p.text_embedding.weight": torch.zeros(732, 4)}, {}, "v2")
    path.write_bytes(b"02" + path.read_bytes()[2:])
    with pytest.raises(CheckpointError, match="v3 model"):
        load_sovits_checkpoint(path)


def test_altered_header_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "v2.pth"
    save_sovits_checkpoint(path, {"enc_p.text_embedding.weight": torch.zeros(732, 4)}, {}, "v2")
    path.write_bytes(b"06" + path.read_bytes()[2:])
    with pytest.raises(CheckpointError, match="header says v2ProPlus but the weights are v2"):
        load_sovits_checkpoint(path)
