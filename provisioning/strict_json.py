"""Strict JSON for signed files: one meaning per byte string, every key accounted for.

A manifest is signed, so two readers must never disagree on what it says.
Python's `json` keeps the last of two equal keys and accepts NaN; another
language's parser may keep the first.  Here duplicate keys, NaN and Infinity
are errors, and `Obj` reads an object key by key with its type checked, so a
missing, unknown or mistyped key is refused with its full name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn


class PackFormatError(ValueError):
    """A pack, manifest, key or list that must not be used; the message says why."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def loads_strict(data: bytes, source: str) -> Any:
    """Parse UTF-8 JSON, refusing duplicate keys, NaN/Infinity, a BOM and bad UTF-8."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise PackFormatError(f"{source}: starts with a byte-order mark; write plain UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackFormatError(f"{source}: not UTF-8 ({exc})") from exc
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKeyError as dup:
        raise PackFormatError(f"{source}: key {dup.key!r} appears twice in one object") from None
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise PackFormatError(f"{source}: not valid JSON ({exc})") from exc


def dumps_canonical(value: Any) -> bytes:
    """The project's way to write a file to be signed: sorted keys, 2-space indent, UTF-8."""
    text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, allow_nan=False)
    return (text + "\n").encode("utf-8")


HEX64 = re.compile(r"[0-9a-f]{64}")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class Obj:
    """One JSON object read key by key; `where` is its dotted name in error messages."""

    def __init__(
        self,
        value: Any,
        where: str,
        required: Iterable[str],
        optional: Iterable[str] = (),
        *,
        source: str = "",
    ) -> None:
        self.where = where
        self.source = source
        if not isinstance(value, dict):
            self._raise(f"{where or 'the top level'}: expected an object, got {_kind(value)}")
        required = tuple(required)
        allowed = set(required) | set(optional)
        missing = [k for k in required if k not in value]
        if missing:
            self._raise(f"missing key(s) {', '.join(self.name(k) for k in missing)}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            self._raise(f"unknown key(s) {', '.join(self.name(k) for k in unknown)}")
        self.value: dict[str, Any] = value

    def _raise(self, message: str) -> NoReturn:
        raise PackFormatError(f"{self.source}: {message}" if self.source else message)

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, problem: str) -> NoReturn:
        self._raise(f"{self.name(key)}: {problem}")

    def child(
        self, value: Any, key: str, required: Iterable[str], optional: Iterable[str] = ()
    ) -> Obj:
        """An object found under `key` (e.g. "files[3]"), named and sourced like this one."""
        return Obj(value, self.name(key), required, optional, source=self.source)

    def has(self, key: str) -> bool:
        return key in self.value

    def raw(self, key: str) -> Any:
        return self.value[key]

    def str(
        self,
        key: str,
        *,
        choices: Sequence[str] | None = None,
        pattern: re.Pattern[str] | None = None,
        max_len: int = 4096,
        empty: bool = False,
    ) -> str:
        got = self.value[key]
        if not isinstance(got, str):
            self.fail(key, f"expected a string, got {_kind(got)}")
        if not empty and not got.strip():
            self.fail(key, "is empty")
        if len(got) > max_len:
            self.fail(key, f"longer than {max_len} characters")
        if "\x00" in got:
            self.fail(key, "contains a NUL character")
        if choices is not None and got not in choices:
            self.fail(key, f"{got!r} is not one of {', '.join(choices)}")
        if pattern is not None and not pattern.fullmatch(got):
            self.fail(key, f"{got!r} is not of the form {pattern.pattern}")
        return got

    def opt_str(self, key: str, **kwargs: Any) -> str | None:
        if self.value.get(key) is None:
            return None
        return self.str(key, **kwargs)

    def int(self, key: str, lo: int | None = None, hi: int | None = None) -> int:
        got = self.value[key]
        if isinstance(got, bool) or not isinstance(got, int):
            self.fail(key, f"expected an integer, got {_kind(got)}")
        if lo is not None and got < lo:
            self.fail(key, f"{got} is below {lo}")
        if hi is not None and got > hi:
            self.fail(key, f"{got} is above {hi}")
        return got

    def opt_int(self, key: str, lo: int | None = None, hi: int | None = None) -> int | None:
        if self.value.get(key) is None:
            return None
        return self.int(key, lo, hi)

    def opt_float(self, key: str, lo: float, hi: float) -> float | None:
        got = self.value.get(key)
        if got is None:
            return None
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            self.fail(key, f"expected a number, got {_kind(got)}")
        if not lo <= got <= hi:
            self.fail(key, f"{got} is outside {lo}..{hi}")
        return float(got)

    def bool(self, key: str) -> bool:
        got = self.value[key]
        if not isinstance(got, bool):
            self.fail(key, f"expected true or false, got {_kind(got)}")
        return got

    def list(self, key: str, *, empty: bool = True, max_items: int = 10000) -> list[Any]:
        got = self.value[key]
        if not isinstance(got, list):
            self.fail(key, f"expected a list, got {_kind(got)}")
        if not empty and not got:
            self.fail(key, "is an empty list")
        if len(got) > max_items:
            self.fail(key, f"has more than {max_items} items")
        return got

    def obj(self, key: str, required: Iterable[str], optional: Iterable[str] = ()) -> Obj:
        return self.child(self.value[key], key, required, optional)

    def opt_obj(
        self, key: str, required: Iterable[str], optional: Iterable[str] = ()
    ) -> Obj | None:
        if self.value.get(key) is None:
            return None
        return self.obj(key, required, optional)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)
