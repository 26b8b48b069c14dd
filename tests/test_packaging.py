"""Every Python package of the source tree is installed, with its data files."""

from __future__ import annotations

from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    renamed = {folder: name for name, folder in config["package-dir"].items()}
    found = set()
    for init in REPO.glob("**/__init__.py"):
        folder = init.parent.relative_to(REPO)
        if folder.parts[0] in {"tests", ".venv"} or folder.parts[0].startswith("."):
            continue
        top = renamed.get(folder.parts[0], folder.parts[0])
        found.add(".".join((top, *folder.parts[1:])))
    assert found == set(config["packages"])
