"""Compare arrays the way the golden set's tolerances are documented.

Each comparison returns a verdict and a short figure a technician can read
("max|d| 3.1e-06 <= 1e-04"), so a failing case says by how much it failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Tolerances from the golden set's README (section 6), float32 on the CPU.
ATOL_LOGITS = 1e-4
ATOL_FEATURES = 1e-4  # ge, ge512, m_p, logs_p, z
ATOL_AUDIO = 1e-4
SPEC_RTOL = 1e-5
SPEC_ATOL = 1e-4


@dataclass(frozen=True)
class Verdict:
    """One check's outcome and a readable figure."""

    ok: bool
    detail: str


def close(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float = 0.0) -> Verdict:
    """|got - want| <= atol + rtol * |want| everywhere, with matching shapes."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return Verdict(False, f"{name}: shape {got.shape} != {want.shape}")
    if not np.all(np.isfinite(got)):
        return Verdict(False, f"{name}: non-finite values")
    diff = np.abs(got - want)
    ok = bool(np.all(diff <= atol + rtol * np.abs(want)))
    worst = float(diff.max()) if diff.size else 0.0
    return Verdict(ok, f"{name} max|d| {worst:.1e}{' <= ' if ok else ' > '}{atol:.0e}")


def equal(name: str, got: object, want: object) -> Verdict:
    """Exact equality of integer arrays or scalars."""
    got_a, want_a = np.asarray(got), np.asarray(want)
    if got_a.shape != want_a.shape:
        return Verdict(False, f"{name}: shape {got_a.shape} != {want_a.shape}")
    mismatches = int(np.sum(got_a != want_a))
    if mismatches:
        return Verdict(False, f"{name}: {mismatches} of {want_a.size} differ")
    return Verdict(True, f"{name} identical")


def combine(*verdicts: Verdict) -> Verdict:
    """All must hold; the figures are joined."""
    return Verdict(all(v.ok for v in verdicts), "; ".join(v.detail for v in verdicts))
