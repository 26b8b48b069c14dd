"""`kiosk compat-check` on the golden set in tests/golden/ and on folders made from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from appliance.cli import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["compat-check", *args])
    return code, capsys.readouterr().out.strip().splitlines()


def test_every_case_of_the_golden_set_matches(
    compat_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = _run(capsys, str(compat_dir))
    failed = [line for line in lines[:-1] if not line.startswith("ok ")]
    assert failed == []
    # 6 weight sets, 4 GPT files x 5 cases, 4 SoVITS files x 5 cases, 40 sentences.
    assert lines[-1] == "compat: 86/86 cases match"
    assert code == 0


def test_a_changed_text_golden_is_caught(
    compat_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = json.loads((compat_dir / "text_frontend.json").read_text(encoding="utf-8"))
    golden["cases"] = golden["cases"][:3]
    golden["cases"][1]["v2"]["phones"][0] = "zh"
    (tmp_path / "text_frontend.json").write_text(json.dumps(golden), encoding="utf-8")
    code, lines = _run(capsys, str(tmp_path), "--only", "text")
    assert code == 1
    assert lines[-1] == "compat: 2/3 cases match"
    assert lines[1].startswith("FAIL text pub_01") and "v2 phones: 1 of" in lines[1]


def test_another_folder_with_the_same_layout(
    compat_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(compat_dir / "gpt_v2_eos.npz", tmp_path)
    code, lines = _run(capsys, str(tmp_path))
    assert code == 0
    assert lines[-1] == "compat: 5/5 cases match"


def test_a_wrong_golden_token_is_caught(
    compat_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with np.load(compat_dir / "gpt_v1_eos.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["tokens"] = arrays["tokens"].copy()
    arrays["tokens"][3] = (arrays["tokens"][3] + 1) % 1024
    np.savez(tmp_path / "gpt_v1_eos.npz", **arrays)
    code, lines = _run(capsys, str(tmp_path))
    assert code == 1
    assert lines[-1] == "compat: 4/5 cases match"
    assert any(
        line.startswith("FAIL gpt v1 eos: greedy tokens") and "1 of 11 differ" in line
        for line in lines
    )


def test_not_a_golden_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compat-check", str(tmp_path)]) == 2
    assert "no golden files found" in capsys.readouterr().err
    assert main(["compat-check", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_unknown_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compat-check", str(tmp_path), "--only", "gpt,vits"]) == 2
    assert "unknown kind" in capsys.readouterr().err
