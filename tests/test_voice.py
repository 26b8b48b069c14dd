"""`engines.Voice`: load once, speak many, stream typed chunks, one utterance at a time, close."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from devtools.demo_voice import write_demo_voice_folder
from engines.voice import Voice, VoiceBusyError, VoiceClosedError
from engines.voice_folder import (
    CONFIG_FILE,
    PROMPT_FILE,
    VoiceConfig,
    VoiceFolderError,
    load_prompt,
    read_config,
    save_prompt,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_voice_folder(tmp_path_factory.mktemp("voice") / "demo")


@pytest.fixture(scope="module")
def voice(folder: Path):
    with Voice.load(folder, backend="torch-eager") as loaded:
        yield loaded


def test_two_phrases_then_a_stream_with_typed_chunks(voice: Voice) -> None:
    first = voice.synthesize("你好。")
    second = voice.synthesize("欢迎。")
    assert first.sample_rate == second.sample_rate == 32000
    assert first.samples.dtype == np.float32 and first.seconds > 0.3
    chunks = list(voice.stream("你好啊朋友们。欢迎来到这里！", cut="cut5"))
    assert [c.is_final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].is_pause and chunks[-1].samples.size == 9600
    assert sorted({c.segment_index for c in chunks}) == [0, 1]
    indices = [c.segment_index for c in chunks]
    assert indices == sorted(indices)
    assert sum(c.is_pause for c in chunks) == 2  # one pause after each segment
    assert all(np.isfinite(c.samples).all() for c in chunks)


def test_the_same_seed_gives_the_same_samples(voice: Voice) -> None:
    a = voice.synthesize("你好。", options=voice.options(seed=3))
    b = voice.synthesize("你好。", options=voice.options(seed=3))
    c = voice.synthesize("你好。", options=voice.options(seed=4))
    assert np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def test_phrase_key_covers_text_settings_and_backend(voice: Voice) -> None:
    key = voice.phrase_key("一百个人。")
    assert key == voice.phrase_key("一百个人。")
    assert key == voice.phrase_key("100个人。")  # same normalised text, same samples
    assert key != voice.phrase_key("一百个人！")
    assert key != voice.phrase_key("一百个人。", language="auto")
    for change in ({"seed": 9}, {"speed": 1.1}, {"noise_scale": 0.3}, {"top_k": 3}):
        assert key != voice.phrase_key("一百个人。", options=voice.options(**change)), change
    other = replace(voice.options(), max_new_tokens=7)
    assert key != voice.phrase_key("一百个人。", options=other)
    with pytest.raises(ValueError, match="choose from"):
        voice.options(language="en")  # an argument of synthesize, not a setting


def test_one_utterance_at_a_time(folder: Path) -> None:
    with Voice.load(folder, backend="torch-eager", wait_seconds=0.2) as voice:
        stream = voice.stream("你好。")
        next(stream)  # holds the voice until the stream ends
        errors: list[BaseException] = []

        def second() -> None:
            try:
                voice.synthesize("欢迎。")
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=second)
        worker.start()
        worker.join(10)
        assert len(errors) == 1 and isinstance(errors[0], VoiceBusyError)
        assert "busy" in str(errors[0])
        list(stream)
        voice.synthesize("欢迎。")  # free again once the stream is done


def test_an_abandoned_stream_releases_the_voice(folder: Path) -> None:
    with Voice.load(folder, backend="torch-eager", wait_seconds=0.2) as voice:
        stream = voice.stream("你好。欢迎！")
        next(stream)
        stream.close()
        assert voice.synthesize("你好。").seconds > 0


def test_a_closed_voice_says_so(folder: Path) -> None:
    voice = Voice.load(folder, backend="torch-eager")
    voice.close()
    voice.close()  # twice is fine
    with pytest.raises(VoiceClosedError, match="load it again"):
        voice.synthesize("你好。")


def test_close_frees_the_memory(folder: Path) -> None:
    """RSS in a fresh process: loaded voice, two phrases and a stream, then close()."""
    script = textwrap.dedent(
        f"""
        import gc, json, resource
        import torch
        torch.set_num_threads(1)
        from engines.voice import Voice

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize() / 2**20

        before = rss()
        voice = Voice.load({str(folder)!r}, backend="torch-eager")
        voice.synthesize("你好。")
        voice.synthesize("欢迎。")
        for _ in voice.stream("你好。"):
            pass
        loaded = rss()
        voice.close()
        gc.collect()
        print(json.dumps({{"before": before, "loaded": loaded, "closed": rss()}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True
    )
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    grown = rss["loaded"] - rss["before"]
    assert grown > 300, rss  # a full-size voice is hundreds of MB
    assert rss["closed"] - rss["before"] < 0.35 * grown, rss


# --- the voice folder format ---------------------------------------------------------


def test_prompt_round_trip(voice: Voice, tmp_path: Path) -> None:
    path = save_prompt(tmp_path / PROMPT_FILE, voice.prompt)
    back = load_prompt(path)
    assert torch.equal(back.phone_ids, voice.prompt.phone_ids)
    assert torch.equal(back.semantic_tokens, voice.prompt.semantic_tokens)
    assert torch.equal(back.bert, voice.prompt.bert)
    assert torch.equal(back.timbre.ge, voice.prompt.timbre.ge)


def test_prompt_with_nan_is_refused(voice: Voice, tmp_path: Path) -> None:
    bad = replace(voice.prompt, bert=torch.full_like(voice.prompt.bert, float("nan")))
    path = save_prompt(tmp_path / PROMPT_FILE, bad)
    with pytest.raises(VoiceFolderError, match="NaN"):
        load_prompt(path)


def _config(folder: Path) -> dict:
    return json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "kiosk-voice/9"}, "format"),
        ({"colour": "blue"}, "unknown key"),
        ({"sovits_version": "v3"}, "sovits_version"),
        ({"id": "../x"}, "id"),
        ({"gpt_sha256": "abc"}, "gpt_sha256"),
        ({"text_features": "maybe"}, "text_features"),
        ({"defaults": {"speed": 1.0, "pitch": 3}}, "unknown key"),
    ],
)
def test_bad_voice_json_is_refused_with_the_key(
    folder: Path, tmp_path: Path, change: dict, message: str
) -> None:
    broken = tmp_path / "v"
    broken.mkdir()
    for name in ("gpt.ckpt", "sovits.pth", PROMPT_FILE):
        (broken / name).symlink_to(folder / name)
    (broken / CONFIG_FILE).write_text(json.dumps({**_config(folder), **change}))
    with pytest.raises(VoiceFolderError, match=message):
        read_config(broken)


def test_missing_files_are_named(folder: Path, tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_bytes((folder / CONFIG_FILE).read_bytes())
    with pytest.raises(VoiceFolderError, match=r"gpt\.ckpt is missing"):
        read_config(tmp_path)
    with pytest.raises(VoiceFolderError, match="not a voice folder"):
        read_config(tmp_path / "nothing")


def test_config_round_trip(folder: Path) -> None:
    config = read_config(folder)
    assert VoiceConfig.from_json(config.to_json()) == config
    assert config.text_features == "zeros" and "untrained" in config.notice


def test_a_chunk_is_handed_on_as_soon_as_it_is_made(
    voice: Voice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No look-ahead: the first chunk reaches the caller before the second is asked for."""
    asked: list[int] = []

    def pieces(*args, **kwargs):
        for i in range(3):
            asked.append(i)
            yield 0, False, np.zeros(640, dtype=np.float32)
        asked.append(3)
        yield 0, True, np.zeros(9600, dtype=np.float32)

    monkeypatch.setattr("engines.voice.iter_segment_pieces", pieces)
    stream = voice.stream("你好。")
    first = next(stream)
    assert asked == [0] and not first.is_final
    rest = list(stream)
    assert [c.is_final for c in rest] == [False, False, True] and rest[-1].is_pause


def test_precomputed_features_stand_in_for_bert(voice: Voice) -> None:
    """A curated phrase's features (made with its pack) replace BERT; a misfit is refused."""
    segments = voice.segments("你好啊朋友们。欢迎！", cut="cut5")
    zeros = [torch.zeros(1024, len(s.phone_ids)) for s in segments]
    a = voice.synthesize("", segments=segments, features=zeros)
    b = voice.synthesize("你好啊朋友们。欢迎！", cut="cut5")  # the demo voice's BERT is zeros
    assert np.array_equal(a.samples, b.samples)
    louder = [z + 0.5 for z in zeros]
    assert not np.array_equal(voice.synthesize("", segments=segments, features=louder).samples,
                              a.samples)  # fmt: skip
    with pytest.raises(ValueError, match="segments: the text is read differently"):
        voice.synthesize("", segments=segments, features=[*zeros, zeros[0]])
    with pytest.raises(ValueError, match="phones; rebuild the pack"):
        voice.synthesize("", segments=segments, features=[z[:, :1] for z in zeros])


def test_a_load_error_is_reported_at_once_and_the_runtime_freed_later(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime loads on a worker thread: an error in this thread's part (here a damaged
    prompt) must not wait for it (a graph export takes minutes), and the runtime it makes
    anyway is closed, not leaked."""
    import time

    import engines.voice as voice_module

    broken = tmp_path / "v"
    broken.mkdir()
    for name in ("gpt.ckpt", "sovits.pth", CONFIG_FILE):
        (broken / name).symlink_to(folder / name)
    (broken / PROMPT_FILE).write_bytes(b"not a prompt")
    closed = threading.Event()

    class SlowRuntime:
        gpt_version = sovits_version = "v2"

        def close(self) -> None:
            closed.set()

    def slow_load(*args: object, **kwargs: object) -> tuple[SlowRuntime, None]:
        time.sleep(1.5)
        return SlowRuntime(), None

    monkeypatch.setattr(voice_module, "load_voice_runtime", slow_load)
    start = time.perf_counter()
    with pytest.raises(VoiceFolderError):
        Voice.load(broken, backend="torch-eager")
    assert time.perf_counter() - start < 1.0
    assert closed.wait(10)


def test_a_voice_without_its_bert_says_so_at_load(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It still loads (curated phrases carry their features, English needs none), but the
    technician reads what is missing at load, not at the first Mandarin sentence."""
    from devtools.boot_bench import boot_voice_folder
    from engines.features.errors import FeatureModelError

    reads_bert = boot_voice_folder(folder)  # the same voice, its text through BERT
    with caplog.at_level("WARNING"), Voice.load(reads_bert, backend="torch-eager") as voice:
        assert "no BERT model (chinese-roberta-wwm-ext-large folder)" in caplog.text
        assert "--bert DIR" in caplog.text
        with pytest.raises(FeatureModelError, match="--bert DIR"):
            voice.synthesize("你好。")
        assert voice.synthesize("Hello.", language="en").samples.size > 0
    caplog.clear()
    with caplog.at_level("WARNING"), Voice.load(folder, backend="torch-eager"):
        assert "no BERT model" not in caplog.text  # its text features are zeros
