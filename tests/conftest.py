"""Shared test fixtures: where the golden data lives, and small helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
#: The public golden set of the reference implementation (see its README).
COMPAT = REPO / "tests" / "golden"


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for a module: small ops stall when OpenMP threads compete
    with other work on a 2-core machine.  Use with `pytestmark`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def compat_dir() -> Path:
    return COMPAT


@pytest.fixture(scope="session")
def demo_voice_files(tmp_path_factory: pytest.TempPathFactory):
    """The demo voice's official-format files, written once per test session."""
    from devtools.demo_voice import write_demo_voice

    return write_demo_voice(tmp_path_factory.mktemp("demo-voice"))


@pytest.fixture(scope="session")
def demo_voice(demo_voice_files):
    """(VoiceModels, VoicePrompt) of the demo voice, with seeded prompt phones and tokens."""
    import torch

    from engines.sovits.spectrogram import reference_spectrogram
    from engines.synthesis import VoicePrompt
    from engines.voice_models import load_voice_models
    from engines.wav_io import read_wav

    models = load_voice_models(demo_voice_files.gpt, demo_voice_files.sovits)
    clip, _ = read_wav(demo_voice_files.reference)
    timbre = models.sovits.timbre(reference_spectrogram(torch.from_numpy(clip.mean(0))[None]))
    prompt = VoicePrompt(
        phone_ids=torch.arange(100, 110),
        bert=torch.zeros(1024, 10),
        semantic_tokens=torch.arange(0, 1000, 37),
        timbre=timbre,
    )
    return models, prompt


# The daemon's end-to-end fixtures (a provisioned box, `kiosk run` as a subprocess),
# registered here once so every test module shares one box per session.
from daemon_harness import kiosk_box, kiosk_daemon  # noqa: E402, F401
