"""The phrase cache: index.json as the build step writes it, the RAM budget, damaged files,
and the free-text LRU cache on disk (a full disk is a logged miss)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from appliance.phrase_cache import (
    INDEX_FORMAT,
    FreeTextCache,
    PhraseCache,
    PhraseIndexError,
    read_index,
)


def tone(seconds: float, rate: int, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_phrases(
    folder: Path, items: list[tuple[str, str, float, int]], voice: str = "ama", version: int = 1
) -> Path:
    """A phrases/ folder in the layout of appliance/README.md (FLAC files + index.json)."""
    entries = []
    for kind, item_id, seconds, rate in items:
        rel = f"{kind}/{item_id}.flac"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(path), tone(seconds, rate), rate, subtype="PCM_24")
        entries.append(
            {
                "kind": kind,
                "id": item_id,
                "file": rel,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "sample_rate": rate,
                "seconds": seconds,
                "lufs": -18.0,
                "true_peak_dbtp": -3.0,
                "key": hashlib.sha256(item_id.encode()).hexdigest(),
            }
        )
    index = {
        "format": INDEX_FORMAT,
        "voice": voice,
        "version": version,
        "target_lufs": -18.0,
        "items": entries,
    }
    (folder / "index.json").write_text(json.dumps(index), encoding="utf-8")
    return folder


def test_phrases_are_held_at_the_device_rate(tmp_path: Path) -> None:
    folder = write_phrases(
        tmp_path / "phrases",
        [("synthetic", "welcome", 0.5, 32000), ("archival", "song", 0.4, 48000)],
    )
    cache = PhraseCache(48000, 64 << 20)
    assert cache.add_version("ama", 1, folder) == []
    welcome = cache.samples("ama", "synthetic", "welcome")
    assert welcome.dtype == np.float32 and abs(welcome.size - 24000) <= 2
    assert cache.in_ram("ama", "synthetic", "welcome") and not welcome.flags.writeable
    song = cache.samples("ama", "archival", "song")
    file_samples, _ = soundfile.read(str(folder / "archival/song.flac"), dtype="float32")
    np.testing.assert_array_equal(song, file_samples)  # same rate: exactly the file
    with pytest.raises(KeyError):
        cache.samples("ama", "synthetic", "nope")


def test_budget_keeps_button_phrases_in_ram_and_reads_the_rest_from_disk(tmp_path: Path) -> None:
    items = [("synthetic", f"p{i}", 1.0, 48000) for i in range(4)]
    folder = write_phrases(tmp_path / "phrases", items)
    # room for two seconds of float32 at 48 kHz (plus slack), not four
    cache = PhraseCache(48000, int(2.2 * 48000 * 4) + 2 * 4096)
    cache.add_version("ama", 1, folder, first=["p3"])
    assert cache.in_ram("ama", "synthetic", "p3")
    held = [i for i in range(4) if cache.in_ram("ama", "synthetic", f"p{i}")]
    assert len(held) == 2 and cache.ram_used() <= cache.ram_bytes
    on_disk = next(i for i in range(4) if i not in held)
    before = cache.disk_reads
    samples = cache.samples("ama", "synthetic", f"p{on_disk}")
    assert samples.size == 48000 and cache.disk_reads == before + 1


def test_damaged_and_missing_files_are_left_out_with_a_problem(tmp_path: Path) -> None:
    folder = write_phrases(
        tmp_path / "phrases",
        [
            ("synthetic", "a", 0.2, 48000),
            ("synthetic", "b", 0.2, 48000),
            ("synthetic", "c", 0.2, 48000),
        ],
    )
    data = bytearray((folder / "synthetic/a.flac").read_bytes())
    data[-10] ^= 0xFF
    (folder / "synthetic/a.flac").write_bytes(bytes(data))
    (folder / "synthetic/b.flac").unlink()
    cache = PhraseCache(48000, 64 << 20)
    problems = cache.add_version("ama", 1, folder)
    assert len(problems) == 2
    assert any("a.flac is damaged" in p for p in problems)
    assert cache.item("ama", "synthetic", "a") is None
    assert cache.item("ama", "synthetic", "b") is None
    assert cache.samples("ama", "synthetic", "c").size == 9600  # the rest keeps working


def test_bad_indexes_are_clear_errors(tmp_path: Path) -> None:
    folder = tmp_path / "phrases"
    folder.mkdir()
    with pytest.raises(PhraseIndexError, match="missing"):
        read_index(folder)
    (folder / "index.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(PhraseIndexError, match="unreadable"):
        read_index(folder)
    (folder / "index.json").write_text(json.dumps({"format": "other/9"}), encoding="utf-8")
    with pytest.raises(PhraseIndexError, match="format"):
        read_index(folder)
    bad = {
        "format": INDEX_FORMAT,
        "voice": "ama",
        "version": 1,
        "items": [
            {
                "kind": "synthetic",
                "id": "x",
                "file": "../../etc/passwd",
                "sha256": "0",
                "sample_rate": 1,
                "seconds": 1,
            }
        ],
    }
    (folder / "index.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(PhraseIndexError, match="leaves the phrases folder"):
        read_index(folder)
    write_phrases(folder, [("synthetic", "a", 0.1, 48000)], voice="other")
    with pytest.raises(PhraseIndexError, match="lists other v1"):
        PhraseCache(48000, 1 << 20).add_version("ama", 1, folder)


def test_a_new_version_replaces_the_old_in_ram(tmp_path: Path) -> None:
    cache = PhraseCache(48000, 64 << 20)
    cache.add_version("ama", 1, write_phrases(tmp_path / "v1", [("synthetic", "old", 0.1, 48000)]))
    cache.add_version(
        "ama", 2, write_phrases(tmp_path / "v2", [("synthetic", "new", 0.1, 48000)], version=2)
    )
    assert cache.version("ama") == 2
    assert cache.item("ama", "synthetic", "old") is None
    assert not cache.in_ram("ama", "synthetic", "old")
    cache.remove("ama")
    assert cache.item("ama", "synthetic", "new") is None and cache.ram_used() == 0


def key(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def test_free_text_cache_round_trip_and_lru_eviction(tmp_path: Path) -> None:
    one = tone(1.0, 32000)
    size = 32000 * 2 + 44  # 16-bit WAV
    cache = FreeTextCache(tmp_path / "free", max_bytes=int(2.5 * size))
    assert cache.get(key(0)) is None
    for n in range(2):
        assert cache.put(key(n), one, 32000)
    past = time.time() - 100
    os.utime(cache._path(key(1)), (past, past))  # key 1 is the least recently used...
    got = cache.get(key(0))  # ...and key 0 was just used
    assert got is not None and got[1] == 32000
    np.testing.assert_allclose(got[0], one, atol=1 / 32768)
    assert cache.put(key(2), one, 32000)
    assert cache.get(key(1)) is None and cache.get(key(0)) is not None
    assert cache.size_bytes() <= cache.max_bytes
    with pytest.raises(ValueError, match="hex digest"):
        cache.get("../escape")


def test_free_text_cache_damaged_file_and_unwritable_folder(tmp_path: Path) -> None:
    cache = FreeTextCache(tmp_path / "free", max_bytes=1 << 20)
    cache.put(key(1), tone(0.2, 32000), 32000)
    cache._path(key(1)).write_bytes(b"RIFF garbage")
    assert cache.get(key(1)) is None and not cache._path(key(1)).exists()
    # the folder turned into a file (as root, permissions would not stop the write)
    blocked = FreeTextCache(tmp_path / "free2", max_bytes=1 << 20)
    blocked.folder.rmdir()
    blocked.folder.write_bytes(b"not a folder")
    assert blocked.put(key(2), tone(0.2, 32000), 32000) is False
    assert blocked.problem is not None and "cannot write" in blocked.problem
    assert not list(tmp_path.glob("free2*/.tmp-*"))


def test_free_text_cache_full_disk(tmp_path: Path) -> None:
    """Writes that fail half-way (the file-size limit stands in for a full disk: the
    same failed write(2), EFBIG instead of ENOSPC) leave no file and a problem line."""
    cache = FreeTextCache(tmp_path / "free", max_bytes=1 << 20)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        assert cache.put(key(3), tone(1.0, 32000), 32000) is False
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert cache.problem is not None
    assert list(cache.folder.iterdir()) == []
    assert cache.put(key(3), tone(1.0, 32000), 32000) and cache.problem is None
