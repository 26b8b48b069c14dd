"""The touch UI: pages and static assets the daemon serves (no Python logic here)."""

from pathlib import Path

#: Folder of `templates/` and `static/`.
ASSETS = Path(__file__).resolve().parent
