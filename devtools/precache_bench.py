"""Pack and provision times of a full-size v2 voice with many phrases, and their loudness.

The voice is the demo voice (full-size GPT v2 and SoVITS v2, formula weights,
untrained), the helper models are the tiny stand-ins (a box gets BERT only
from a base pack, and a curated voice needs none), the phrases are made from
the stand-in BERT's characters.  `kiosk pack` and a real provisioning run are
timed; provisioning includes the health check and the precache of every
phrase and archival recording.  The untrained GPT never says EOS, so each
segment is capped (`--tokens`; 50 tokens are 2 s of audio).

    python -m devtools.precache_bench --out out/precache-bench [--backend onnxruntime]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import soundfile
from kiosk_build.loudness import measure

# `engines` first: it sets the OpenMP wait policy before torch is imported.
from engines.threads import configure_torch  # isort: skip

from devtools.demo_voice import reference_tone, write_demo_voice
from devtools.sample_packs import BIO, HANZI, box_config_dir, consent_text, make_keys, tiny_png
from devtools.tiny_helpers import write_tiny_helpers
from engines.wav_io import write_wav
from provisioning.pack_format import MANIFEST, SIGNATURE
from provisioning.packing import PackRequest, make_pack
from provisioning.provision import Provisioner, box_trust
from provisioning.signing import load_private_key, sign_bytes
from provisioning.state import State

VOICE = "demo-full"
REF_TEXT = "欢迎来到博物馆。"


def phrases_toml(count: int) -> str:
    """`count` phrases of 5-14 characters of the stand-in BERT's vocabulary."""
    out = []
    chars = HANZI
    for i in range(count):
        length = 5 + (i * 7) % 10
        start = (i * 11) % (len(chars) - length)
        text = chars[start : start + length]
        if i % 3 == 2:
            half = len(text) // 2
            text = f"{text[:half]}，{text[half:]}"
        out.append(
            f'[[phrase]]\nid = "p{i + 1:02d}"\ntext = "{text}。"\nlang = "zh"\n'
            f'label_zh = "第{i + 1}句"\nlabel_en = "Phrase {i + 1}"\n'
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/precache-bench"))
    parser.add_argument("--backend", default="torch-eager", choices=("torch-eager", "onnxruntime"))
    parser.add_argument("--phrases", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=50, help="semantic tokens per segment")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    configure_torch()
    root = args.out
    if root.exists():
        shutil.rmtree(root)
    files = write_demo_voice(root / "voice")
    pretrained = root / "pretrained_models"
    write_tiny_helpers(pretrained, HANZI)
    inputs = root / "inputs"
    (inputs / "archival").mkdir(parents=True)
    write_wav(inputs / "archival" / "song-1958.wav", reference_tone(7, seconds=6.0))
    (inputs / "phrases.toml").write_text(phrases_toml(args.phrases), encoding="utf-8")
    (inputs / "consent.toml").write_text(consent_text("curated"), encoding="utf-8")
    (inputs / "bio.toml").write_text(BIO, encoding="utf-8")
    (inputs / "portrait.png").write_bytes(tiny_png())
    keys = make_keys(root / "keys")

    start = time.perf_counter()
    result = make_pack(
        PackRequest(
            voice_id=VOICE,
            version=1,
            gpt=files.gpt,
            sovits=files.sovits,
            reference=files.reference,
            reference_text=REF_TEXT,
            phrases=inputs / "phrases.toml",
            consent=inputs / "consent.toml",
            out=root / "stick",
            portrait=inputs / "portrait.png",
            bio=inputs / "bio.toml",
            archival=inputs / "archival",
            pretrained=pretrained,
        ),
        progress=lambda line: logging.info("%s", line),
    )
    pack_seconds = time.perf_counter() - start
    data = (result.path / MANIFEST).read_bytes()
    (result.path / SIGNATURE).write_bytes(sign_bytes(load_private_key(keys.key), data))

    state = State(root / "state")
    config = box_config_dir(root / "config", keys)
    start = time.perf_counter()
    provisioner = Provisioner(
        state, box_trust(config), backend=args.backend, precache_tokens=args.tokens, progress=print
    )
    items = provisioner.run(root / "stick")
    provision_seconds = time.perf_counter() - start
    if [i.status for i in items] != ["activated"]:
        print(f"provisioning failed: {items}", file=sys.stderr)
        return 1
    active = state.active(VOICE)
    assert active is not None
    index = json.loads((active.phrases / "index.json").read_text())
    rows = []
    for item in index["items"]:
        samples, rate = soundfile.read(str(active.phrases / item["file"]), dtype="float64")
        level = measure(samples, rate)
        rows.append((item["kind"], item["id"], samples.shape[0] / rate, level))
    target = index["target_lufs"]
    print(f"\npack: {pack_seconds:.1f} s; provision ({args.backend}, {args.phrases} phrases, "
          f"{args.tokens} tokens per segment): {provision_seconds:.1f} s")  # fmt: skip
    print(f"{'kind':9} {'id':12} {'seconds':>7} {'LUFS':>7} {'dBTP':>6}")
    for kind, item_id, seconds, level in rows:
        print(f"{kind:9} {item_id:12} {seconds:7.2f} {level.lufs:7.2f} {level.true_peak_dbtp:6.2f}")
    worst = max(abs(level.lufs - target) for *_rest, level in rows)
    print(f"largest deviation from {target} LUFS: {worst:.2f} LU; highest true peak "
          f"{max(level.true_peak_dbtp for *_r, level in rows):.2f} dBTP")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "pack_seconds": pack_seconds, "provision_seconds": provision_seconds,
            "backend": args.backend, "phrases": args.phrases, "tokens": args.tokens,
            "items": [{"kind": k, "id": i, "seconds": s, "lufs": lv.lufs,
                       "true_peak_dbtp": lv.true_peak_dbtp} for k, i, s, lv in rows],
        }, indent=2))  # fmt: skip
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
