"""Resident memory of loaded voices, per backend, for one and for several voices at once.

A box keeps every exhibit's voice loaded, so what matters is the steady
resident set after loading and speaking, and the peak on the way there.  Each
(backend, voice count) runs in a fresh process: voice folders of full-size
formula-weight voices (different seeds, so no two share weights) are loaded
through `engines.Voice`, warmed, and each speaks one phrase; then VmRSS (after
the collector and `malloc_trim`) and VmHWM are read.  Graphs are exported
beforehand in their own process, so export memory never counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devtools.demo_voice import DEMO_SEED, write_demo_voice_folder

PHRASE = "欢迎来到民俗博物馆。"


def voice_folders(root: Path, count: int) -> list[Path]:
    """`count` distinct full-size voice folders under `root` (written once, then reused)."""
    return [write_demo_voice_folder(root / f"voice-{i}", DEMO_SEED + i) for i in range(count)]


def _child_script(folders: Sequence[Path], backend: str, export: bool) -> str:
    return textwrap.dedent(
        f"""
        import gc, json
        from engines.voice import Voice, release_heap

        def status(key):
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) / 1024
            return 0.0

        export = None
        if {export!r}:
            from kiosk_build.export_onnx import export_voice as export
        base = status("VmRSS")
        folders = {list(map(str, folders))!r}
        voices = [Voice.load(p, backend={backend!r}, export=export) for p in folders]
        loaded = status("VmRSS")
        for v in voices:
            v.warm(runtime=False)
            v.synthesize({PHRASE!r}, options=v.options(seed=0))
        gc.collect()
        release_heap()
        print("RESULT " + json.dumps({{
            "backend": voices[0].backend, "precision": voices[0].precision,
            "voices": len(voices), "base_mb": base, "loaded_mb": loaded,
            "steady_mb": status("VmRSS"), "peak_mb": status("VmHWM"),
        }}))
        """
    )


def measure(folders: Sequence[Path], backend: str, *, export: bool = False) -> dict[str, Any]:
    """Load `folders` on `backend` in a fresh process; RSS figures in MiB."""
    done = subprocess.run(
        [sys.executable, "-c", _child_script(folders, backend, export)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"memory run {backend} x{len(folders)} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def run(root: Path, backends: Sequence[str], counts: Sequence[int] = (1, 3)) -> list[dict]:
    """Every (backend, count); ONNX Runtime graphs exported first, in their own process."""
    folders = voice_folders(root, max(counts))
    if "onnxruntime" in backends:
        measure(folders, "onnxruntime", export=True)  # export once; not a figure
    return [measure(folders[:n], b) for b in backends for n in counts]


def table(records: Sequence[dict]) -> str:
    rows = [
        "| backend | voices | steady RSS MiB | per voice MiB | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        per = (r["steady_mb"] - r["base_mb"]) / r["voices"]
        rows.append(
            f"| {r['backend']} ({r['precision']}) | {r['voices']} | {r['steady_mb']:.0f} | "
            f"{per:.0f} | {r['peak_mb']:.0f} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="out/memory-voices", help="where the voices are kept")
    parser.add_argument("--backend", action="append", help="repeatable; default both CPU ones")
    parser.add_argument("--json", help="write the records here too")
    args = parser.parse_args(argv)
    records = run(Path(args.root), args.backend or ["torch-eager", "onnxruntime"])
    print(table(records))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
