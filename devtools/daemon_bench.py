"""`kiosk bench --daemon`: press-to-first-sample of the real daemon while free text is made.

The daemon (`kiosk run` over the sample box, capture sink paced like a sound
card) gets `presses` mock-pin presses of a cached phrase, one every
`gap` seconds, while a client keeps its synthesis worker busy with new
10-character Chinese texts (never cached).  The daemon measures each press
itself, from the edge the gpiozero callback saw to the first sample handed to
the audio callback (`/health` -> `latency`); free text's first audio is
measured the same way, from the request.

The sample voice is tiny and untrained, so its synthesis is cheaper than a real
voice's; what it shows is the press path's share: GIL hand-over from the
synthesis thread, the router, the player's request queue and the output's
block pacing (256 frames at 48 kHz: 5.3 ms per block).
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from devtools.daemon_process import VOICE, Box, Daemon, build_box
from devtools.sample_packs import HANZI
from devtools.soak import SOAK_BUTTONS, SOAK_CONFIG


def bench_daemon(
    presses: int = 1000, *, gap: float = 0.05, box_dir: str | None = None, seed: int = 0
) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-daemon-") as tmp:
        root = Path(box_dir) if box_dir else Path(tmp) / "box"
        box = Box.load(root) if (root / Box.RECORD).exists() else build_box(root)
        started = time.monotonic()
        daemon = Daemon(box, Path(tmp) / "daemon", buttons=SOAK_BUTTONS, extra_config=SOAK_CONFIG)
        daemon.start()
        ready_s = time.monotonic() - started
        stop = threading.Event()
        said = {"accepted": 0, "busy": 0}

        def synthesis_load() -> None:
            while not stop.is_set():
                text = "".join(rng.choice(HANZI) for _ in range(10))
                status, _ = daemon.post("/api/say", {"voice": VOICE, "text": text})
                said["accepted" if status == 202 else "busy"] += 1
                stop.wait(0.05)

        loader = threading.Thread(target=synthesis_load, daemon=True)
        try:
            loader.start()
            time.sleep(1.0)
            before = daemon.get("/health")["latency"]["presses_measured"]
            for _ in range(presses):
                daemon.press_gpio(17, hold=0.002)
                time.sleep(gap)
            stop.set()
            loader.join(30)
            time.sleep(1.0)
            health = daemon.get("/health")
        finally:
            stop.set()
            code = daemon.stop()
        latency = health["latency"]
        return {
            "presses": presses,
            "measured": latency["presses_measured"] - before,
            "press_p50_ms": latency["press_p50_ms"],
            "press_p99_ms": latency["press_p99_ms"],
            "texts_said": said["accepted"],
            "texts_refused_busy": said["busy"],
            "text_first_audio_p50_ms": latency["text_first_audio_p50_ms"],
            "start_to_ready_s": round(ready_s, 1),
            "backend": health["backend"],
            "exit_code": code,
        }


def format_result(r: dict[str, Any]) -> str:
    return (
        f"daemon: press -> first sample p50 {r['press_p50_ms']} ms, p99 {r['press_p99_ms']} ms "
        f"over {r['measured']} presses while {r['texts_said']} free texts were synthesised "
        f"({r['backend']}); free text first audio p50 {r['text_first_audio_p50_ms']} ms "
        f"(tiny sample voice); start to READY {r['start_to_ready_s']} s"
    )


def write_json(path: str, result: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
