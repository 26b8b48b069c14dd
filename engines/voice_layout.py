"""File names of a voice folder (see `engines.voice_folder`), importable without torch.

A process that opens a voice's graphs before torch has loaded (a fast boot)
needs the folder layout and nothing else.
"""

from __future__ import annotations

CONFIG_FILE = "voice.json"
GPT_FILE = "gpt.ckpt"
SOVITS_FILE = "sovits.pth"
PROMPT_FILE = "prompt.npz"
LEXICON_FILE = "lexicon.txt"
GRAPHS_DIR = "graphs"
