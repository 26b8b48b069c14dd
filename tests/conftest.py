"""Shared test fixtures: where the golden data lives, and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: CI and developers keep the golden data in `../shared` beside the checkout.
SHARED = REPO.parent / "shared"
COMPAT = SHARED / "compat"


@pytest.fixture(scope="session")
def compat_dir() -> Path:
    if not (COMPAT / "keys_shapes.json").is_file():
        pytest.skip("golden data ../shared/compat is not present beside the checkout")
    return COMPAT
