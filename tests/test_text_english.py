"""English frontend: golden parity with GPT-SoVITS, normalisation rules, offline guarantees."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines.text.english import EnglishFrontendError, english_g2p, normalize_english
from engines.text.english.neural_g2p import neural_model
from engines.text.lexicon import Lexicon
from engines.text.symbols import phones_to_ids, symbol_ids

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden" / "text_frontend.json"


def _golden_items() -> list[tuple[str, str, str, dict]]:
    """(case id, text, version, expected) for en cases and en segments of mixed cases."""
    items = []
    for case in json.loads(GOLDEN.read_text("utf-8"))["cases"]:
        if case["kind"] == "en":
            items += [(case["id"], case["text"], v, case[v]) for v in ("v2", "v1")]
        elif case["kind"] == "mixed_zh":
            for n, seg in enumerate(case["v2_webui_zh"]["segments"]):
                if seg["lang"] == "en":
                    items.append((f"{case['id']}/seg{n}", seg["text"], "v2", seg))
    return items


GOLDEN_ITEMS = _golden_items()


@pytest.mark.parametrize(("case_id", "text", "version", "expected"), GOLDEN_ITEMS)
def test_golden(case_id: str, text: str, version: str, expected: dict) -> None:
    result = english_g2p(text, version)
    assert result.norm_text == expected["norm_text"]
    assert result.phones == expected["phones"]
    assert result.word2ph is None and expected["word2ph"] is None
    assert phones_to_ids(result.phones, version) == expected["phone_ids"]


def test_golden_counts() -> None:
    assert sum(1 for i in GOLDEN_ITEMS if "/" not in i[0]) == 16  # 8 en cases x (v2, v1)
    assert sum(1 for i in GOLDEN_ITEMS if "/" in i[0]) == 9


# Expected values below were produced by the official GPT-SoVITS code (english.py with
# an "NN" pos-tag stub), run offline on these inputs.
NORMALISATION = [
    ("I have 3 apples.", "I have three apples."),
    ("12,345 people", "twelve thousand, three hundred forty-five people"),
    ("1,000,000", "one million"),
    (
        "In 1987 and 2000, 2005, 1900, 2010, 2024, 3000.",
        "In nineteen eighty-seven and two thousand, two thousand five, nineteen hundred, "
        "twenty ten, twenty twenty-four, three thousand.",
    ),
    ("1001 nights", "ten oh one nights"),
    ("0 and 007", "zero and seven"),
    ("1. First item", "first, First item"),
    (
        "the 1st, 22nd, 103rd and 11th",
        "the first, twenty-second, one hundred and third and eleventh",
    ),
    ("It costs $19.99", "It costs nineteen dollars and ninety-nine cents"),
    ("$1", "one dollar"),
    ("$0.5", "fifty cents"),
    ("12$", "twelve dollars"),
    ("£7.14", "seven pounds and fourteen pence"),
    ("£1.01", "one pound and one penny"),
    ("£0.01", "one penny"),
    ("$1.2.3", "one point two.three dollars"),
    ("at 10:30", "at ten thirty a.m."),
    ("at 13:00", "at one o'clock p.m."),
    ("at 0:05", "at zero five a.m."),
    ("at 12:45", "at twelve forty-five p.m."),
    ("3.14", "three point one four"),
    ("3/4", "three fourths"),
    ("1/2", "one half"),
    ("3/2", "three halves"),
    ("6/1", "six"),
    ("1/0", "one zeroth"),
    ("20%", "twenty percent"),
    ("5km", "five kilometers"),
    ("1m", "one meter"),
    ("1.5km", "one point five kilometers"),
    ("60km/h", "sixty kilometersh"),
    ("10min", "ten minutes"),
    ("the 1990s", "the nineteen ninety seconds"),
    ("-19°C", "negative nineteen degrees celsius"),
    ("1L", "one liter"),
    ("3 + 4 = 7", "three plus four Equals seven"),
    ("8 ÷ 2", "eight divided by two"),
    ("at -5 degrees", "atnegative five degrees"),
    ("Dr. Smith", "Dr. Smith"),
    ("e.g. this", "for example this"),
    ("I.E. that", "that is that"),
    ("café naïve", "cafe naive"),
    ("don’t", "dont"),
    ("Hello，world。", "Helloworld."),
    ("Wait... what?!", "Wait. what?"),
    ("well - ok", "well minus ok"),
    ("iPhone", "i Phone"),
    ("NASA", "N A S A"),
    ("U.S.A.", "U. S. A."),
    ("Wi-Fi", "Wi- Fi"),
]


@pytest.mark.parametrize(("text", "expected"), NORMALISATION)
def test_normalisation(text: str, expected: str) -> None:
    assert normalize_english(text) == expected


PHONES = [
    ("Dr. Smith", "D R AY1 V . S M IH1 TH"),
    ("Mr. Brown", "M IH1 S T ER0 . B R AW1 N"),
    ("St. Louis", "S T R IY1 T . L UW1 IH0 S"),
    ("at 13:00", "AE1 T W AH1 N AH0 K L AA1 K P IY1 . EH1 M ."),
    ("A", ", EY1"),
    ("a", ", AH0"),
    ("AI", ", EY1 AY1"),
    ("OK", ", OW1 K EY1"),
    ("Wi-Fi", "D AH1 B AH0 L Y UW0 AY1 - F AY1"),
    ("McDonald's", "M IH0 K D AA1 N AH0 L D Z"),
    ("it's James's", "IH1 T S JH EY1 M Z IH0 Z"),
    ("Aarav went", "AA1 R AA0 V W EH1 N T"),  # name dictionary (Title case only)
    (
        "the ChatGPT JSON conda",
        "DH AH0 CH AE1 T JH IY1 P IY1 T IY1 JH EY1 EH1 S OW1 EH1 N K AA1 N D AH0",
    ),
    ("read the record", "R EH1 D DH AH0 R EH1 K ER0 D"),  # homographs with the "NN" tag
    ("x.com", "Z EH1 K S AH0 M"),
    ("", ","),
    ("!!!", ", !"),
]


@pytest.mark.parametrize(("text", "expected"), PHONES)
def test_phones(text: str, expected: str) -> None:
    assert english_g2p(text).phones == expected.split()


def test_v1_equals_v2() -> None:
    text = "The 3rd attempt at 9:15 cost £4.50 - blorptastic, isn't it?"
    v1, v2 = english_g2p(text, "v1"), english_g2p(text, "v2")
    assert v1 == v2
    assert phones_to_ids(v1.phones, "v1") == phones_to_ids(v2.phones, "v2")


def test_unknown_version() -> None:
    with pytest.raises(EnglishFrontendError):
        english_g2p("hello", "v9")
    assert issubclass(EnglishFrontendError, ValueError)


def test_uncovered_and_segmentation() -> None:
    result = english_g2p("The qwrtpsdfgh met a fewshot kiosk.")
    assert result.uncovered == ["qwrtpsdfgh"]  # "fewshot" splits into known words
    # wordsegment splits first: letters and known pieces, the rest to the model
    assert english_g2p("zorblax snarfle").uncovered == ["zorb", "snarf"]
    assert "F Y UW1 SH AA1 T" in " ".join(result.phones)


def test_lexicon_overrides_everything() -> None:
    lexicon = Lexicon()
    lexicon.add("en", "Nguyen", ["W", "IH1", "N"])
    lexicon.add("en", "read", ["R", "IY1", "D"])  # a homograph
    lexicon.add("en", "a", ["EY1"])  # a single letter
    lexicon.add("en", "qwrtpsdfgh", ["B", "L", "AO1", "R", "P"])  # an unknown word
    result = english_g2p("Nguyen read a qwrtpsdfgh book", lexicon=lexicon)
    expected = "W IH1 N R IY1 D EY1 B L AO1 R P B UH1 K"
    assert result.phones == expected.split()
    assert result.uncovered == []
    assert english_g2p("Nguyen").phones == ["N", "UW0", "Y", "EH1", "N"]  # the dictionary's
    assert english_g2p("qwrtpsdfgh").uncovered == ["qwrtpsdfgh"]


MADE_UP = {
    "activationist": "AE2 K T IH0 V EY1 SH AH0 N IH0 S T",
    "blorptastic": "B L AO2 R P T AE1 S T IH0 K",
    "zyxqv": "Z IH1 K S K",
}


def test_neural_g2p_made_up_words() -> None:
    model = neural_model()
    for word, phones in MADE_UP.items():
        assert model.predict(word) == phones.split()
        assert model.predict(word) == model.predict(word)  # deterministic


def test_neural_g2p_matches_g2p_en(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our numpy port against g2p_en's own predict(); g2p_en is imported with NLTK stubbed."""
    nltk = pytest.importorskip("nltk")

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("network download attempted")

    monkeypatch.setattr(nltk, "download", refuse)
    monkeypatch.setattr(nltk.data, "find", lambda *_a, **_k: "stub")
    import g2p_en.g2p as reference

    monkeypatch.setattr(reference, "cmudict", types.SimpleNamespace(dict=dict))
    official = reference.G2p()
    words = [*MADE_UP, "kiosk", "gpt", "o'neil", "wi-fi", "snorkelwump", "x" * 30, "qwrtpsdfgh"]
    ours = neural_model()
    for word in words:
        assert ours.predict(word) == official.predict(word), word


def test_nothing_is_downloaded() -> None:
    """Fresh interpreter: no network, no nltk.download, g2p_en never imported."""
    script = textwrap.dedent(
        """
        import socket, sys
        def refuse(*a, **k):
            raise AssertionError("network access attempted")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        import nltk
        nltk.download = refuse
        from engines.text.english import english_g2p
        r = english_g2p("Aarav qwrtpsdfgh fewshot iPhone cost $5 at 10:30, read it.")
        assert r.uncovered == ["qwrtpsdfgh"], r.uncovered
        assert "g2p_en" not in sys.modules
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


ENGLISHY = st.text(
    alphabet=st.sampled_from(
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list(" .,;:!?'\"-+=×÷/$£%°()…，。！？’é\t\n")
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60), ENGLISHY))
def test_property_never_raises(text: str) -> None:
    table = symbol_ids("v2")
    for version in ("v2", "v1"):
        result = english_g2p(text, version)
        assert result.phones and all(p in table for p in result.phones)
        assert len(result.phones) >= 4 or result.phones[0] == ","
        assert result.word2ph is None


def test_crash_inputs_of_the_reference() -> None:
    """Inputs on which the reference raises (int() of ',5', '(5'; huge numbers) still work."""
    for text in ["$,5", "(5$ ok", "£,86.4", "9" * 60, "1" + "0" * 5000, "3/" + "7" * 5000]:
        assert english_g2p(text).phones


def test_ten_thousand_characters() -> None:
    sentence = "the museum opened in 1987 and welcomes 12,500 visitors a year"
    words = sentence.split(" ") * 200
    text = " ".join(f"{w}{i}" if i % 50 == 0 else w for i, w in enumerate(words))[:10_000]
    result = english_g2p(text)
    assert len(result.phones) > 5000
