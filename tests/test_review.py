"""`kiosk review PACK --out DIR`: the review sheet of an unsigned pack, for real.

One unsigned pack is made per module from the sample kit, with labels and a
biography holding HTML, so the sheet must escape what the pack says.  The
review says every phrase with the pack's voice (a few tokens each: the
models are untrained), and the tests read the sheet back: every phrase's
player plays a file in DIR, the loudness printed is the file's, nothing
reaches outside the folder, the consent and the manifest hash are there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from kiosk_build.loudness import measure

from appliance.cli import main
from devtools import sample_packs
from engines.wav_io import read_wav
from provisioning.pack_format import MANIFEST, SIGNATURE
from provisioning.review import _signature
from provisioning.signing import load_private_key, load_trust, sign_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Semantic tokens per segment: enough for audio to measure, quick on a small CPU.
TOKENS = 8
HOSTILE_LABEL = '<b onmouseover="alert(1)">Tom & Jerry</b>'
HOSTILE_BIO = "She sang <script>alert('bio')</script> all her life."


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("review")
    kit = sample_packs.write_kit(root / "kit")
    kit.phrases.write_text(
        kit.phrases.read_text(encoding="utf-8").replace(
            'label_en = "The song"', f"label_en = '{HOSTILE_LABEL}'"
        ),
        encoding="utf-8",
    )
    bio = kit.inputs / "bio.toml"
    bio.write_text(
        bio.read_text(encoding="utf-8").replace(
            'bio_en = "She sang mountain songs all her life."', f'bio_en = "{HOSTILE_BIO}"'
        ),
        encoding="utf-8",
    )
    keys = sample_packs.make_keys(root / "keys")
    pack = sample_packs.build_pack(kit, None, root / "packs")
    assert not (pack / SIGNATURE).exists()
    return {"pack": pack, "key": keys.key, "trust": keys.trust, "root": root}


class Sheet(HTMLParser):
    """Every tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_review_sheet_of_an_unsigned_pack(made, tmp_path, capsys) -> None:
    out = tmp_path / "review"
    code = main(["review", str(made["pack"]), "--out", str(out), "--max-tokens", str(TOKENS)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"review sheet: {out / 'index.html'}" in printed
    page = (out / "index.html").read_text(encoding="utf-8")
    sheet = Sheet()
    sheet.feed(page)
    text = " ".join(sheet.text)
    summary = json.loads((out / "review.json").read_text(encoding="utf-8"))

    # Self-contained: no script, no stylesheet or font from elsewhere, nothing absolute.
    names = [tag for tag, _ in sheet.tags]
    assert "script" not in names and "link" not in names and "iframe" not in names
    assert "://" not in page and "url(" not in page and "@import" not in page
    sources = [a["src"] for tag, a in sheet.tags if tag in ("audio", "img")]
    for src in sources:
        assert src and not src.startswith(("/", "data:")) and ".." not in src
        assert (out / src).is_file(), src
    # One player per phrase and per archival recording, each playing its own file.
    audio = [a["src"] for tag, a in sheet.tags if tag == "audio"]
    assert audio == ["audio/welcome.wav", "audio/song.wav", "audio/hello-en.wav",
                     "archival/01.wav", "archival/02.wav"]  # fmt: skip
    # Escaped: the pack's HTML is shown as text, never as markup.
    assert not any(a.get("onmouseover") for _, a in sheet.tags)
    assert HOSTILE_LABEL in text and HOSTILE_BIO in text
    assert "&lt;script&gt;alert(&#x27;bio&#x27;)&lt;/script&gt;" in page

    # The loudness printed is the file's; phones and uncovered words per phrase.
    by_id = {p["id"]: p for p in summary["phrases"]}
    for phrase_id, item in by_id.items():
        samples, rate = read_wav(out / item["file"])
        assert rate == 32000 and samples.shape[0] == 1
        assert item["seconds"] == pytest.approx(samples.shape[1] / rate, abs=1e-3)
        loudness = measure(samples[0], rate)
        assert np.isfinite(loudness.lufs)
        assert item["lufs"] == pytest.approx(loudness.lufs, abs=0.05), phrase_id
        assert f"loudness {item['lufs']:.1f} LUFS" in text
        assert item["segments"] and all(s["phones"] for s in item["segments"])
        assert item["problem"] is None
    assert by_id["welcome"]["uncovered"] == [] and by_id["song"]["uncovered"] == []
    assert by_id["hello-en"]["uncovered"], "Zorbleflax is in no dictionary"
    assert f"Uncovered words: {', '.join(by_id['hello-en']['uncovered'])}" in text
    assert " ".join(by_id["song"]["segments"][0]["phones"]) in text
    assert len(by_id["song"]["segments"]) == 2  # cut at the comma, as the box cuts

    # The consent, the disclosure, the bio, the archival list, the hash, unsigned.
    manifest_sha = hashlib.sha256((made["pack"] / MANIFEST).read_bytes()).hexdigest()
    assert summary["manifest_sha256"] == manifest_sha and manifest_sha in text
    assert summary["signed"] is False and "not signed yet" in text
    for words in ("陈阿嬷 (Chen Ama)", "Lin Chen", "granddaughter", "2099-12-31",
                  "gallery-2-songs", "此声音由人工智能生成。", "This voice is generated by AI.",
                  "1921-2019", "她一生都在唱山歌。", "山歌 1958", "interview"):  # fmt: skip
        assert words in text, words
    assert (out / "portrait.png").read_bytes() == (made["pack"] / "portrait.png").read_bytes()


def test_signature_on_the_sheet(made, tmp_path) -> None:
    """A review never needs a signature; one present is checked against --trust."""
    signed = tmp_path / made["pack"].name
    shutil.copyfile(made["pack"] / MANIFEST, tmp_path / MANIFEST)
    data = (tmp_path / MANIFEST).read_bytes()
    signed.mkdir()
    (signed / SIGNATURE).write_bytes(sign_bytes(load_private_key(made["key"]), data))
    trust = load_trust(made["trust"])
    assert _signature(signed, data, True, trust)[0] == "museum"
    assert _signature(signed, data, True, None) == (
        None, "signed (the signature was not checked: no --trust given)")  # fmt: skip
    stranger = sample_packs.make_keys(tmp_path / "stranger", "stranger")
    name, note = _signature(signed, data, True, load_trust(stranger.trust))
    assert name is None and note.startswith("signed, but not by a trusted key")
    assert _signature(signed, data, False, trust)[1].startswith("not signed yet")


def test_a_damaged_pack_is_not_reviewed(made, tmp_path, capsys) -> None:
    damaged = tmp_path / made["pack"].name
    shutil.copytree(made["pack"], damaged)
    portrait = damaged / "portrait.png"
    portrait.write_bytes(portrait.read_bytes()[:-1] + b"\x00")
    code = main(["review", str(damaged), "--out", str(tmp_path / "r"), "--max-tokens", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "portrait.png does not match its SHA-256" in err
    assert not (tmp_path / "r").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.tmp")] == []


def test_out_must_be_a_new_folder_or_an_earlier_review(made, tmp_path, capsys) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.docx").write_text("a curator's own file")
    code = main(["review", str(made["pack"]), "--out", str(busy)])
    assert code == 2 and "holds other files" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["thesis.docx"]
    code = main(["review", str(made["pack"]), "--out", str(busy), "--max-tokens", "0"])
    assert code == 2 and "--max-tokens 0" in capsys.readouterr().err
