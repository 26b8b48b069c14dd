"""Engine cache: keys, verification, atomic publication and cleanup (no TensorRT needed)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from kiosk_build import engine_cache
from kiosk_build.engine_cache import (
    EngineCache,
    EngineKey,
    atomic_write_bytes,
    combine_hashes,
    hash_model_files,
    sha256_file,
)

KEY = EngineKey("a" * 64, "10.3.0", "Orin", "8.7", "12.6")
ENGINES = {"gpt_prefill": b"prefill-engine" * 100, "gpt_decode": b"decode-engine" * 50}


@pytest.fixture
def cache(tmp_path: Path) -> EngineCache:
    return EngineCache(tmp_path / "engines")


def _stored(cache: EngineCache) -> Path:
    return cache.store(
        "anna", KEY, ENGINES, settings={"fp16": True}, precision={"gpt": "fp16"}
    ).directory


def test_roundtrip_records_key_settings_precision_checksums(cache: EngineCache) -> None:
    directory = _stored(cache)
    found = cache.lookup("anna", KEY)
    assert found.hit and found.reason == "engines valid"
    assert found.entry is not None and found.entry.directory == directory
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["key"] == dataclasses.asdict(KEY)
    assert manifest["settings"] == {"fp16": True}
    assert manifest["precision"] == {"gpt": "fp16"}
    for graph, data in ENGINES.items():
        path = found.entry.engine_path(graph)
        assert path.read_bytes() == data
        assert manifest["engines"][graph]["sha256"] == sha256_file(path)
        assert manifest["engines"][graph]["size"] == len(data)


def test_empty_cache_says_nothing_built(cache: EngineCache) -> None:
    found = cache.lookup("anna", KEY)
    assert not found.hit and found.reason == "no engines built yet"


@pytest.mark.parametrize(
    "component, value",
    [
        ("model_hash", "b" * 64),
        ("trt_version", "10.7.0"),
        ("gpu_name", "NVIDIA GeForce RTX 3060"),
        ("compute_capability", "8.6"),
        ("cuda_version", "12.8"),
    ],
)
def test_every_key_component_invalidates(cache: EngineCache, component: str, value: str) -> None:
    _stored(cache)
    changed = dataclasses.replace(KEY, **{component: value})
    assert changed.digest() != KEY.digest()
    found = cache.lookup("anna", changed)
    assert not found.hit
    assert found.reason.startswith("key changed") and component in found.reason


def test_truncated_engine_is_rejected(cache: EngineCache) -> None:
    directory = _stored(cache)
    path = directory / "gpt_decode.engine"
    path.write_bytes(path.read_bytes()[:10])
    found = cache.lookup("anna", KEY)
    assert not found.hit and "truncated" in found.reason and "gpt_decode" in found.reason


def test_corrupted_engine_is_rejected_by_checksum(cache: EngineCache) -> None:
    directory = _stored(cache)
    path = directory / "gpt_prefill.engine"
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "checksum mismatch" in cache.lookup("anna", KEY).reason
    # The cheap mode only sees sizes.
    assert EngineCache(cache.root, verify="size").lookup("anna", KEY).hit


def test_missing_engine_is_rejected(cache: EngineCache) -> None:
    directory = _stored(cache)
    (directory / "gpt_prefill.engine").unlink()
    assert "missing" in cache.lookup("anna", KEY).reason


@pytest.mark.parametrize("content", ["{not json", "[]", '{"key": {}, "engines": {}}', ""])
def test_unreadable_manifest_is_rejected(cache: EngineCache, content: str) -> None:
    directory = _stored(cache)
    (directory / "manifest.json").write_text(content)
    found = cache.lookup("anna", KEY)
    assert not found.hit and found.reason.startswith(("manifest unreadable", "key changed"))


def test_manifest_cannot_point_outside_the_entry(cache: EngineCache) -> None:
    directory = _stored(cache)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["engines"]["gpt_decode"]["file"] = "../../escape.engine"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    assert "outside" in cache.lookup("anna", KEY).reason


def test_failed_store_keeps_the_previous_entry(
    cache: EngineCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stored(cache)
    calls = []

    def power_cut(target: Path, data: bytes) -> None:
        calls.append(target.name)
        if target.name == "manifest.json":
            raise OSError("power cut")
        target.write_bytes(data)

    monkeypatch.setattr(engine_cache, "_write_durably", power_cut)
    with pytest.raises(OSError):
        cache.store("anna", KEY, {"gpt_prefill": b"new", "gpt_decode": b"new"})
    assert "manifest.json" in calls
    found = cache.lookup("anna", KEY)
    assert found.hit and found.entry is not None
    assert found.entry.engine_path("gpt_prefill").read_bytes() == ENGINES["gpt_prefill"]
    assert not [p for p in cache.voice_dir("anna").iterdir() if p.name.startswith(".")]


def test_leftover_temporary_directory_is_ignored_and_cleaned(cache: EngineCache) -> None:
    # What a power cut in the middle of `store` leaves behind: a hidden temp dir.
    half = cache.voice_dir("anna") / f".tmp-{KEY.digest()}-1-2"
    half.mkdir(parents=True)
    (half / "gpt_prefill.engine").write_bytes(b"half")
    assert cache.lookup("anna", KEY).reason == "no engines built yet"
    _stored(cache)
    assert not half.exists()


def test_store_replaces_same_key_and_cleans_old_entries(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, keep=1)
    keys = [dataclasses.replace(KEY, trt_version=f"10.{i}") for i in range(4)]
    for i, key in enumerate(keys):
        os.utime(cache.store("anna", key, ENGINES).directory, (1000 + i, 1000 + i))
    remaining = sorted(p.name for p in cache.voice_dir("anna").iterdir())
    # current + `keep` superseded entries
    assert remaining == sorted([keys[3].digest(), keys[2].digest()])
    cache.store("anna", keys[3], {"gpt_prefill": b"rebuilt"})
    found = cache.lookup("anna", keys[3])
    assert found.entry is not None and found.entry.graphs == ["gpt_prefill"]


def test_atomic_write_bytes_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "timing.cache"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two!")
    assert target.read_bytes() == b"two!"
    assert [p.name for p in target.parent.iterdir()] == ["timing.cache"]


def test_model_hash_depends_on_content_and_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.ckpt", tmp_path / "b.pth"
    a.write_bytes(b"gpt weights")
    b.write_bytes(b"sovits weights")
    first = hash_model_files([a, b])
    assert first == combine_hashes([sha256_file(a), sha256_file(b)])
    assert hash_model_files([b, a]) != first
    moved = tmp_path / "renamed.ckpt"
    a.rename(moved)
    assert hash_model_files([moved, b]) == first
    moved.write_bytes(b"gpt weights!")
    assert hash_model_files([moved, b]) != first


def test_bad_names_are_refused(cache: EngineCache) -> None:
    with pytest.raises(ValueError):
        cache.voice_dir("../etc")
    with pytest.raises(ValueError):
        cache.store("anna", KEY, {"../x": b"1"})
    with pytest.raises(ValueError):
        EngineCache(cache.root, verify="md5")
