"""Checks of the project's systemd units and udev rules, for the tests.

`verify_units` runs `systemd-analyze verify` on units as the box would load
them: they are placed in a throw-away root (`--root`) holding this machine's
own system units (so `sysinit.target`, `paths.target` and the rest resolve)
and an empty stand-in at every absolute path an `Exec*=` line names (verify
refuses a unit whose program is missing; the programs are installed by the
image, not by the tests).  Any line verify prints is a failure: it exits 0 on
an unknown key or a value it could not parse, and only says so.

`unit_directives` reads a unit file into its directives, and `udev_outcome`
evaluates a udev rules file for one event's properties (the subset of the
rule syntax the project's rules use: `==`/`!=` with `|` alternatives and
`*`/`?` globs, `=`/`+=` on ENV and TAG, GOTO/LABEL, `%k`), so a test can say
what a rule does for a stick and for a disk without a device.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Where this machine's own system units are (Debian and others).
HOST_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
_EXEC_KEYS = re.compile(r"Exec(Start|StartPre|StartPost|Stop|StopPost|Reload|Condition)$")
#: Prefix characters an Exec line may carry (`+` full privileges, `-` ignore failure, ...).
_EXEC_PREFIXES = "@-:+!|"


class UnitLintError(AssertionError):
    """What `systemd-analyze verify` or a rule check said."""


def unit_directives(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Section name → [(key, value), ...] in file order (continuation lines joined)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line:
            raise UnitLintError(f"{path}: {line!r} is outside a section or has no '='")
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def values(path: Path, section: str, key: str) -> list[str]:
    """Every value of `key` in `section` (a key may be given several times)."""
    return [v for k, v in unit_directives(path).get(section, []) if k == key]


def exec_programs(path: Path) -> list[str]:
    """The programs the unit's Exec*= lines run (prefixes stripped)."""
    programs = []
    for items in unit_directives(path).values():
        for key, value in items:
            if _EXEC_KEYS.match(key) and value:
                programs.append(value.lstrip(_EXEC_PREFIXES).split()[0])
    return programs


def _host_units() -> Path:
    for folder in HOST_UNIT_DIRS:
        if (folder / "sysinit.target").exists():
            return folder
    raise UnitLintError("no system units on this machine (sysinit.target not found)")


def verify_units(units: Iterable[Path], names: Iterable[str] | None = None) -> str:
    """`systemd-analyze verify` of the unit files; `names` are what to verify (a template
    is verified as an instance, e.g. `kiosk-import@sdb1.service`; default the file names).

    Raises UnitLintError with verify's output when it exits non-zero or prints anything.
    """
    units = [Path(u) for u in units]
    if shutil.which("systemd-analyze") is None:
        raise UnitLintError("systemd-analyze is not installed (apt install systemd)")
    with tempfile.TemporaryDirectory(prefix="unit-lint-") as tmp:
        root = Path(tmp)
        shutil.copytree(_host_units(), root / "usr/lib/systemd/system", symlinks=True)
        target = root / "etc/systemd/system"
        target.mkdir(parents=True)
        for unit in units:
            shutil.copyfile(unit, target / unit.name)
            for program in exec_programs(unit):
                if program.startswith("/"):
                    stand_in = root / program.lstrip("/")
                    stand_in.parent.mkdir(parents=True, exist_ok=True)
                    stand_in.write_text("#!/bin/sh\nexit 0\n")
                    stand_in.chmod(0o755)
        wanted = list(names) if names is not None else [u.name for u in units]
        done = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", f"--root={root}", *wanted],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    output = (done.stdout + done.stderr).replace(str(root), "")
    if done.returncode != 0 or output.strip():
        raise UnitLintError(
            f"systemd-analyze verify {' '.join(wanted)} (exit {done.returncode}):\n{output}"
        )
    return output


# --- udev rules ----------------------------------------------------------------------------

_PAIR = re.compile(r'\s*([A-Z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_MATCH_KEYS = {"ACTION", "SUBSYSTEM", "KERNEL", "ENV", "DEVPATH", "DRIVER", "ATTR", "TAG"}


@dataclass
class UdevOutcome:
    """What the rules did to one event."""

    env: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    run: list[str] = field(default_factory=list)


def parse_udev_rules(text: str) -> list[list[tuple[str, str | None, str, str]]]:
    """Each rule line as [(key, attribute, operator, value)]; refuses what it cannot read."""
    rules = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pairs = []
        for part in _split_commas(line):
            match = _PAIR.fullmatch(part)
            if match is None:
                raise UnitLintError(f"line {number}: cannot read {part!r}")
            pairs.append((match.group(1), match.group(2), match.group(3), match.group(4)))
        rules.append(pairs)
    return rules


def _split_commas(line: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in line:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if quoted:
        raise UnitLintError(f"unbalanced quotes in {line!r}")
    parts.append(current)
    return [p for p in parts if p.strip()]


def _matches(pattern: str, value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, alt) for alt in pattern.split("|"))


def udev_outcome(text: str, properties: Mapping[str, str]) -> UdevOutcome:
    """Run the rules over one event (`ACTION`, `SUBSYSTEM`, `KERNEL` and ENV properties)."""
    rules = parse_udev_rules(text)
    labels = {
        value: index
        for index, rule in enumerate(rules)
        for key, _attr, _op, value in rule
        if key == "LABEL"
    }
    env = dict(properties)
    out = UdevOutcome()
    index = 0
    while index < len(rules):
        rule = rules[index]
        index += 1
        matched = True
        for key, attr, op, value in rule:
            if op not in ("==", "!="):
                continue
            if key not in _MATCH_KEYS:
                raise UnitLintError(f"match key {key} is not understood by this checker")
            actual = (
                env.get(attr or "", "")
                if key == "ENV"
                else (" ".join(out.tags) if key == "TAG" else env.get(key, ""))
            )
            if _matches(value, actual) != (op == "=="):
                matched = False
                break
        if not matched:
            continue
        for key, attr, op, value in rule:
            if op in ("==", "!="):
                continue
            value = value.replace("%k", env.get("KERNEL", ""))
            if key == "GOTO":
                if value not in labels:
                    raise UnitLintError(f"GOTO {value!r} has no LABEL")
                index = labels[value]
            elif key == "ENV" and attr:
                env[attr] = (env.get(attr, "") + " " + value).strip() if op == "+=" else value
                out.env[attr] = env[attr]
            elif key == "TAG":
                out.tags = [*out.tags, value] if op == "+=" else [value]
            elif key == "RUN":
                out.run.append(value)
            elif key != "LABEL":
                raise UnitLintError(f"assignment key {key} is not understood by this checker")
    return out


__all__ = [
    "UdevOutcome",
    "UnitLintError",
    "exec_programs",
    "parse_udev_rules",
    "udev_outcome",
    "unit_directives",
    "values",
    "verify_units",
]
