"""`phrases_bert.npz`: the BERT features of every listed phrase, computed on the workstation.

A curated voice then needs no BERT model on the box.  For phrase `ID`,
segment `i` (the voice's own segmentation with the manifest's `cut`), the
file holds two plain arrays (no pickle):

    ID.i.phone_ids   int64 [phones]          the phone ids the features belong to
    ID.i.bert        float32 [1024, phones]  what `engines.voice_prompt.segment_bert` gives

The phone ids let the box check that its text frontend still reads the phrase
the same way before it uses the features; if not, it needs BERT after all.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np

from engines.voice_prompt import BERT_DIM
from provisioning.strict_json import PackFormatError

_KEY = re.compile(r"([a-z0-9][a-z0-9_-]{0,63})\.(\d{1,4})\.(phone_ids|bert)")

#: One phrase's segments: (phone ids, BERT features [1024, phones]).
Segments = list[tuple[np.ndarray, np.ndarray]]


def phrase_features_bytes(features: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]]) -> bytes:
    """The file's bytes for {phrase id: [(phone_ids, bert), ...]} (checked as it will be read)."""
    arrays: dict[str, np.ndarray] = {}
    for phrase_id, segments in features.items():
        for i, (phone_ids, bert) in enumerate(segments):
            arrays[f"{phrase_id}.{i}.phone_ids"] = np.asarray(phone_ids, dtype=np.int64)
            arrays[f"{phrase_id}.{i}.bert"] = np.asarray(bert, dtype=np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    read_phrase_features(data, list(features), "phrases_bert.npz")
    return data


def read_phrase_features(
    data: bytes, phrase_ids: Sequence[str], source: str
) -> dict[str, Segments]:
    """Parse and check: exactly the given phrases, segments 0..n-1, shapes that agree."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise PackFormatError(f"{source}: not a readable array file ({exc})") from exc
    found: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for name, value in arrays.items():
        match = _KEY.fullmatch(name)
        if match is None:
            raise PackFormatError(f"{source}: unexpected array {name!r}")
        phrase_id, index, what = match.group(1), int(match.group(2)), match.group(3)
        found.setdefault(phrase_id, {}).setdefault(index, {})[what] = value
    unknown = sorted(set(found) - set(phrase_ids))
    if unknown:
        raise PackFormatError(f"{source}: features for phrase {unknown[0]!r}, which is not listed")
    out: dict[str, Segments] = {}
    for phrase_id in phrase_ids:
        segments = found.get(phrase_id)
        if not segments:
            raise PackFormatError(f"{source}: no features for phrase {phrase_id!r}; pack again")
        if sorted(segments) != list(range(len(segments))):
            raise PackFormatError(f"{source}: phrase {phrase_id!r} has a gap in its segments")
        out[phrase_id] = []
        for index in range(len(segments)):
            parts = segments[index]
            where = f"{source}: {phrase_id}.{index}"
            if set(parts) != {"phone_ids", "bert"}:
                raise PackFormatError(f"{where}: needs both phone_ids and bert")
            ids, bert = parts["phone_ids"], parts["bert"]
            if ids.dtype != np.int64 or ids.ndim != 1 or ids.size == 0:
                raise PackFormatError(f"{where}.phone_ids: expected a non-empty int64 vector")
            if bert.dtype != np.float32 or bert.shape != (BERT_DIM, ids.size):
                raise PackFormatError(
                    f"{where}.bert: expected float32 [{BERT_DIM}, {ids.size}], got "
                    f"{bert.dtype} {list(bert.shape)}"
                )
            if not np.isfinite(bert).all():
                raise PackFormatError(f"{where}.bert: holds NaN or infinite values")
            out[phrase_id].append((ids, bert))
    return out
