"""Run every case of a golden folder and report one line per case.

This is what `kiosk compat-check DIR` runs.  A case that raises is reported
as not matching with the error, so one broken part never hides the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.compat.cases import gpt_cases, sovits_cases, text_cases, weight_cases
from devtools.compat.comparison import Verdict
from devtools.compat.golden_set import Case, GoldenSetError, ModelBank, golden_files

KINDS = ("weights", "gpt", "sovits", "text")


@dataclass(frozen=True)
class CaseOutcome:
    case: Case
    verdict: Verdict
    seconds: float


def collect_cases(folder: Path, kinds: Iterable[str] = KINDS) -> list[Case]:
    """Every case of `folder` whose kind is in `kinds`, in report order."""
    kinds = set(kinds)
    bank = ModelBank()
    found: list[Case] = []
    if "weights" in kinds and (folder / "keys_shapes.json").is_file():
        found.extend(weight_cases(folder / "keys_shapes.json", bank))
    for path in golden_files(folder):
        family = path.name.split("_", 1)[0]
        if family in kinds:
            found.extend((gpt_cases if family == "gpt" else sovits_cases)(path, bank))
    if "text" in kinds and (folder / "text_frontend.json").is_file():
        found.extend(text_cases(folder / "text_frontend.json"))
    if not found:
        raise GoldenSetError(f"{folder}: no golden files found (expected gpt_*.npz, sovits_*.npz)")
    return found


def run_cases(cases: Iterable[Case]) -> Iterator[CaseOutcome]:
    """Decide each case in turn; an exception is a failed case, not a crash."""
    for case in cases:
        start = time.perf_counter()
        try:
            verdict = case.run()
        except Exception as exc:
            verdict = Verdict(False, f"error: {type(exc).__name__}: {exc}")
        yield CaseOutcome(case, verdict, time.perf_counter() - start)


def compat_check(
    folder: Path, kinds: Iterable[str] = KINDS, echo: Callable[[str], None] = print
) -> bool:
    """Print one line per case and the summary; True when every case matches."""
    cases = collect_cases(folder, kinds)
    matched = 0
    for outcome in run_cases(cases):
        matched += outcome.verdict.ok
        mark = "ok  " if outcome.verdict.ok else "FAIL"
        echo(f"{mark} {outcome.case.name}  [{outcome.verdict.detail}] ({outcome.seconds:.1f} s)")
    echo(f"compat: {matched}/{len(cases)} cases match")
    return matched == len(cases)
