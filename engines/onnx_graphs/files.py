"""The file names of an export folder and its manifest, without torch.

Kept apart from `contract` (which defines the graphs, and so imports torch) so
that a process can start opening a voice's graphs before torch has loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
GRAPH_FILES: dict[str, str] = {
    "gpt_prefill": "gpt_prefill.onnx",
    "gpt_decode": "gpt_decode.onnx",
    "gpt_decode_int8": "gpt_decode_int8.onnx",  # optional: see OPTIONAL_GRAPHS
    "sovits_encoder": "sovits_encoder.onnx",
    "sovits_flow_vocoder": "sovits_flow_vocoder.onnx",
}
#: Graphs an export may lack: without the 8-bit decode graph the voice runs in FP32.
OPTIONAL_GRAPHS = frozenset({"gpt_decode_int8"})


def data_file_name(graph_file: str) -> str:
    """The file beside a graph that holds its weights (ONNX external data), if it has one.

    The manifest records it with its SHA-256 under the graph's "data" key; a graph
    whose weights are inline has none.
    """
    return f"{graph_file}.data"


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of an export folder, or None if missing or unreadable."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
