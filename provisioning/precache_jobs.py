"""What the build step must cache for an installed voice version: its manifest as jobs.

The build step (`kiosk_build.precache`) knows nothing of packs; this module
turns a version's checked pack copy, manifest and voice folder into its jobs:
every listed phrase with the pack's own BERT features (so the box needs no
BERT for them) and speed/seed, and every archival recording with the
manifest's SHA-256 for it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from engines.voice_folder import read_config
from kiosk_build.precache import ArchivalJob, PhraseJob, PrecacheJobs
from provisioning.pack_format import PHRASES_BERT_FILE, Manifest
from provisioning.phrase_features import read_phrase_features
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
