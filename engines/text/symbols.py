"""The phone symbol tables of GPT-SoVITS: a phone's id is its index in the table.

A voice's embedding rows are indexed by these ids, so the tables are part of
the model file format: v1 has 322 symbols, v2 732 (v1 is an exact prefix of
v2).  They are kept as data in `symbol_tables.json` beside this module.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

SYMBOL_VERSIONS = ("v1", "v2")
UNKNOWN = "UNK"


@cache
def symbols(version: str) -> tuple[str, ...]:
    """The ordered symbol table of `version` ("v1" or "v2")."""
    if version not in SYMBOL_VERSIONS:
        raise ValueError(f"unknown symbol table {version!r}; expected one of {SYMBOL_VERSIONS}")
    tables = json.loads((Path(__file__).with_name("symbol_tables.json")).read_text("utf-8"))
    return tuple(tables[version])


@cache
def symbol_ids(version: str) -> dict[str, int]:
    """Phone -> id for `version`."""
    return {s: i for i, s in enumerate(symbols(version))}


def phones_to_ids(phones: list[str], version: str) -> list[int]:
    """Ids of `phones`; a phone missing from the table becomes "UNK", as the reference does."""
    table = symbol_ids(version)
    unknown = table[UNKNOWN]
    return [table.get(p, unknown) for p in phones]
