"""`kiosk demo` (the README's first command): demo voice, real text, WAV files."""

from __future__ import annotations

import wave
from pathlib import Path

from appliance.cli import main
from appliance.demo import SENTENCES


def test_demo_writes_one_wav_per_sentence(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    written = capsys.readouterr().out.split()
    assert len(written) == len(SENTENCES)
    for name in written:
        with wave.open(name) as wav:
            assert (wav.getframerate(), wav.getnchannels()) == (32000, 1)
            assert wav.getnframes() > 32000 // 4
    assert (tmp_path / "voice" / "voice.json").is_file()
    assert (tmp_path / "voice" / "prompt.npz").is_file()
