"""Every Python package of the source tree is installed, with its data files, and
setuptools' scratch output stays out of the `build/` package."""

from __future__ import annotations

import configparser
import fnmatch
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def _skipped(path: Path) -> bool:
    return path.name == "__pycache__" or path.name.startswith(".")


def _package_folders() -> dict[str, Path]:
    """Import name -> folder of every folder that holds files under a top-level source
    folder (one with Python files, tests aside): code packages, namespace packages
    (`devtools`) and data folders alike, since setuptools installs only listed ones."""
    renamed = {folder: name for name, folder in CONFIG["package-dir"].items()}
    found: dict[str, Path] = {}
    for top in sorted(REPO.iterdir()):
        if not top.is_dir() or _skipped(top) or top.name in {"tests", "docs"}:
            continue
        if not any(top.glob("*.py")):
            continue
        for folder in [top, *sorted(p for p in top.rglob("*") if p.is_dir())]:
            rel = folder.relative_to(REPO)
            if any(_skipped(Path(part)) for part in rel.parts):
                continue
            if any(f.is_file() for f in folder.iterdir()):
                name = ".".join((renamed.get(rel.parts[0], rel.parts[0]), *rel.parts[1:]))
                found[name] = folder
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    assert set(_package_folders()) == set(CONFIG["packages"])


def test_every_data_file_is_declared_package_data() -> None:
    """A file nobody declared is silently left out of the wheel."""
    patterns = CONFIG["package-data"]["*"]
    missing = [
        str(path.relative_to(REPO))
        for folder in _package_folders().values()
        for path in folder.iterdir()
        if path.is_file()
        and path.suffix not in {".py", ".pyc"}
        and not any(fnmatch.fnmatch(path.name, p) for p in patterns)
    ]
    assert missing == []


def test_setuptools_scratch_is_outside_the_build_package() -> None:
    """The design card's `build/` is a package; `build/lib` would be installed into it."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    base = Path(config.get("build", "build_base"))
    assert not base.is_absolute() and base.parts[0] not in CONFIG["package-dir"].values()
    assert base.parts[0] not in {name.split(".")[0] for name in CONFIG["packages"]}
    assert f"/{base.parts[0]}/" in (REPO / ".gitignore").read_text().split()
