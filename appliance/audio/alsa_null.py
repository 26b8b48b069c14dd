"""A named ALSA null device that PortAudio lists, without touching ~/.asoundrc.

PortAudio skips ALSA's built-in `null` PCM when it lists devices, so a box
without a sound card (a CI runner, a bench machine) shows no output at all.
`write_alsa_null_config` writes a small ALSA config that loads the system's
own `alsa.conf` and adds `pcm.kiosk_null` (type null, with a description so
PortAudio lists it); point `ALSA_CONFIG_PATH` at it before sounddevice is
imported, then `[audio] output = "kiosk_null"` opens a real PortAudio stream
whose samples ALSA discards:

    ALSA_CONFIG_PATH=/tmp/kiosk-alsa.conf kiosk run

ALSA's null PCM does not pace: the callback runs as fast as the CPU allows,
so use it to prove the stream opens and the callback runs, and `null` (the
kiosk's paced sink) for anything that needs real-time timing.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The PCM name PortAudio shows (and `[audio] output` takes).
ALSA_NULL_DEVICE = "kiosk_null"
#: Where ALSA keeps its main config on Debian, Ubuntu, Raspberry Pi OS and Jetson.
SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")


def system_alsa_conf() -> Path:
    """The system's `alsa.conf` (under $ALSA_CONFIG_DIR when that is set)."""
    folder = os.environ.get("ALSA_CONFIG_DIR")
    return Path(folder) / "alsa.conf" if folder else SYSTEM_ALSA_CONF


def alsa_null_config(alsa_conf: Path | None = None) -> str:
    """The config text: the system's alsa.conf, then the named null PCM."""
    base = alsa_conf or system_alsa_conf()
    return (
        f"<{base}>\n"
        f"pcm.{ALSA_NULL_DEVICE} {{\n"
        "    type null\n"
        '    hint { show on description "Kiosk: ALSA null output (discards samples)" }\n'
        "}\n"
    )


def write_alsa_null_config(path: str | Path, alsa_conf: Path | None = None) -> Path:
    """Write the config to `path`; set `ALSA_CONFIG_PATH` to it in the process that plays."""
    base = alsa_conf or system_alsa_conf()
    if not base.is_file():
        raise FileNotFoundError(f"no ALSA config at {base}: install alsa-lib (libasound2)")
    path = Path(path)
    path.write_text(alsa_null_config(base), encoding="utf-8")
    return path
