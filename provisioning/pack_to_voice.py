"""A voice folder from a checked copy of a voice pack, with no helper model at all.

Everything the voice folder holds is in the pack already: the official files,
the precomputed prompt (HuBERT tokens, reference phones and BERT, timbre and
speaker embedding), the reference text and language, the lexicon.  So a box
makes the folder by copying; HuBERT, BERT and the speaker model are never
needed for it.  `pack_dir` must be a copy that `check_pack(..., copy_to=)`
wrote (files already hashed); this does not check the pack again.
"""

from __future__ import annotations

from pathlib import Path

from engines.voice_folder import SpeakDefaults, load_prompt, write_voice_folder
from provisioning.pack_format import GPT_FILE, PROMPT_FILE, SOVITS_FILE, Manifest


def write_voice_folder_from_pack(pack_dir: str | Path, manifest: Manifest, out: str | Path) -> Path:
    """The voice folder of a checked voice pack (staged and renamed into place)."""
    pack_dir = Path(pack_dir)
    voice = manifest.voice
    if voice is None:
        raise ValueError(f"{manifest.folder_name}: a {manifest.kind} pack holds no voice")
    return write_voice_folder(
        out,
        voice_id=manifest.id,
        gpt=pack_dir / GPT_FILE,
        sovits=pack_dir / SOVITS_FILE,
        gpt_version=voice.gpt_version,
        sovits_version=voice.model_version,
        prompt=load_prompt(pack_dir / PROMPT_FILE),
        reference_text=voice.reference.text,
        reference_language=voice.reference.language,
        lexicon=pack_dir / voice.lexicon if voice.lexicon else None,
        version=manifest.version,
        defaults=SpeakDefaults(language=voice.reference.language, cut=voice.cut),
    )
