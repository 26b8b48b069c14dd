"""What the build step must cache for an installed voice version: its manifest as jobs.

The build step (`kiosk_build.precache`) knows nothing of packs; this module
turns a version's checked pack copy, manifest and voice folder into its jobs:
every listed phrase with the pack's own BERT features (so the box needs no
BERT for them) and speed/seed, and every archival recording with the
manifest's SHA-256 for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kiosk_build.precache import (
    DEFAULT_TARGET_LUFS,
    ArchivalJob,
    PhraseJob,
    PrecacheJobs,
    precache,
    read_index,
)
from kiosk_build.provenance import BoxSigner
from kiosk_build.voice_build import build_engines

from engines.voice import HelperModels, Voice
from engines.voice_folder import read_config
from provisioning.pack_format import PHRASES_BERT_FILE, Manifest
from provisioning.phrase_features import read_phrase_features
from provisioning.state import ENGINES_DIR, PACK_DIR, PHRASES_DIR, PROVENANCE_DIR, VOICE_DIR
from provisioning.strict_json import PackFormatError


def precache_jobs(
    pack_dir: Path,
    manifest: Manifest,
    manifest_sha256: str,
    voice_folder: Path,
    *,
    max_new_tokens: int | None = None,
) -> PrecacheJobs:
    """The jobs of one voice version (pack copy already verified, voice folder made)."""
    details = manifest.voice
    if details is None:
        raise PackFormatError(f"{manifest.id}: a {manifest.kind} pack has no phrases to cache")
    features = {}
    if details.phrases:
        features = read_phrase_features(
            (pack_dir / PHRASES_BERT_FILE).read_bytes(),
            [p.id for p in details.phrases],
            str(pack_dir / PHRASES_BERT_FILE),
        )
    phrases = []
    for phrase in details.phrases:
        overrides: dict[str, object] = {}
        if phrase.speed is not None:
            overrides["speed"] = phrase.speed
        if phrase.seed is not None:
            overrides["seed"] = phrase.seed
        phrases.append(
            PhraseJob(
                id=phrase.id,
                text=phrase.text,
                language=phrase.lang,
                cut=details.cut,
                overrides=overrides,
                features=tuple(features[phrase.id]),
            )
        )
    archival = [
        ArchivalJob(
            id=Path(item.path).stem,
            title=item.title,
            source=pack_dir / item.path,
            sha256=manifest.file(item.path).sha256,
        )
        for item in details.archival
    ]
    return PrecacheJobs(
        voice_id=manifest.id,
        version=manifest.version,
        manifest_sha256=manifest_sha256,
        consent_sha256=details.consent.document_sha256,
        display_name=manifest.display_name_en,
        defaults=asdict(read_config(voice_folder).defaults),
        phrases=tuple(phrases),
        archival=tuple(archival),
        max_new_tokens=max_new_tokens,
    )


@dataclass(frozen=True)
class BuildSettings:
    """How a voice version is built on this box (the `[provisioning]` settings)."""

    backend: str = "torch-eager"
    """The backend the engines are built for and the phrases are spoken with."""
    target_lufs: float = DEFAULT_TARGET_LUFS
    """Loudness of every cached file (LUFS, BS.1770)."""
    max_new_tokens: int | None = None
    """Cap on semantic tokens per segment (None: the voice's own caps)."""
    progress: bool | None = None
    """A progress bar (None: when stderr is a terminal)."""


def build_version(
    state_root: Path,
    folder: Path,
    manifest: Manifest,
    manifest_sha256: str,
    *,
    settings: BuildSettings,
    helpers: HelperModels | None = None,
    export: Any = None,
) -> tuple[str, bool]:
    """Engines for this device, then every phrase cached, for one version folder.

    `folder` holds `pack/` and `voice/` (a staging folder or an installed
    version); the phrases go to `folder/phrases/`.  Returns a line for the log
    and whether the phrase folder changed.
    """
    pack, voice_folder, phrases = folder / PACK_DIR, folder / VOICE_DIR, folder / PHRASES_DIR
    jobs = precache_jobs(
        pack, manifest, manifest_sha256, voice_folder, max_new_tokens=settings.max_new_tokens
    )
    engines = build_engines(
        voice_folder,
        settings.backend,
        phrase_features=[job.features or () for job in jobs.phrases],
        engine_dir=state_root / ENGINES_DIR,
    )
    signer = BoxSigner.ensure(state_root / PROVENANCE_DIR)
    # "auto" speaks on what auto picks at load time (the engines above are for that one);
    # the TensorRT backend finds this voice's engines by these options.
    options = {"engine_dir": str(state_root / ENGINES_DIR), "voice": manifest.id}

    def load() -> Voice:
        return Voice.load(
            voice_folder,
            helpers=helpers,
            backend=settings.backend,
            backend_options=options,
            export=export,
        )

    before = read_index(phrases)
    index = precache(
        load,
        jobs,
        phrases,
        target_lufs=settings.target_lufs,
        signer=signer,
        progress=settings.progress,
    )
    made = sum(1 for item in index["items"] if not _listed(before, item))
    return (
        f"{engines.line()}; phrases: {len(index['items'])} cached ({made} made) at "
        f"{settings.target_lufs:g} LUFS"
    ), before != index


def _listed(index: dict[str, Any] | None, item: dict[str, Any]) -> bool:
    """The item was in the index before, as the same file (a rebuilt file has a new hash)."""
    return index is not None and any(
        i.get("sha256") == item["sha256"] for i in index.get("items", [])
    )
