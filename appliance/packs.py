"""The workstation's pack commands: `kiosk keygen`, `pack`, `pack-base`, `review`, `sign`,
`revoke`, `verify`.

Argument parsing only; the work is in `provisioning/`.  Names and flags are an
interface the acceptance checks and other tools drive: keep them.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def add_keygen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="key name, e.g. museum-2026")
    parser.add_argument("--out", required=True, metavar="DIR", help="writes DIR/NAME.key, .pub")


def run_keygen(args: argparse.Namespace) -> int:
    from provisioning.signing import generate_keypair

    key, pub = generate_keypair(args.name, Path(args.out))
    print(f"private key (keep it off the boxes, mode 0600): {key}")
    print(f"public key (copy it to each box's trusted-keys/): {pub}")
    return 0


def add_pack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", required=True, help="the voice's id (lowercase, digits, - _)")
    parser.add_argument("--version", required=True, type=int, help="the pack's version, 1, 2, …")
    parser.add_argument("--gpt", required=True, metavar="G.ckpt", help="official GPT weights")
    parser.add_argument("--sovits", required=True, metavar="S.pth", help="official SoVITS weights")
    parser.add_argument("--ref", required=True, metavar="REF.wav", help="3-10 s reference clip")
    parser.add_argument("--ref-text", required=True, metavar="TEXT", help="words in the clip")
    parser.add_argument("--ref-lang", default="zh", choices=("zh", "en"), help="default zh")
    parser.add_argument("--phrases", required=True, metavar="phrases.toml")
    parser.add_argument("--consent", required=True, metavar="consent.toml")
    parser.add_argument("--portrait", metavar="IMG", help="PNG, JPEG or WebP portrait")
    parser.add_argument("--bio", metavar="bio.toml", help="name_zh, name_en, dates, bio_zh, bio_en")
    parser.add_argument("--archival", metavar="DIR", help="folder of original recordings")
    parser.add_argument("--lexicon", metavar="FILE", help="the voice's own pronunciations")
    parser.add_argument(
        "--pretrained",
        metavar="DIR",
        default="pretrained_models",
        help="GPT-SoVITS pretrained_models folder (HuBERT, BERT, speaker model)",
    )
    parser.add_argument("--out", required=True, metavar="FOLDER", help="writes FOLDER/ID-N.kvp/")


def run_pack(args: argparse.Namespace) -> int:
    from provisioning.packing import PackRequest, make_pack

    request = PackRequest(
        voice_id=args.id,
        version=args.version,
        gpt=Path(args.gpt),
        sovits=Path(args.sovits),
        reference=Path(args.ref),
        reference_text=args.ref_text,
        reference_language=args.ref_lang,
        phrases=Path(args.phrases),
        consent=Path(args.consent),
        portrait=_path(args.portrait),
        bio=_path(args.bio),
        archival=_path(args.archival),
        lexicon=_path(args.lexicon),
        pretrained=_path(args.pretrained),
        out=Path(args.out),
    )
    make_pack(request, progress=lambda line: print(line, flush=True))
    return 0


def add_pack_base_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bert", required=True, metavar="DIR", help="the BERT model folder")
    parser.add_argument("--id", default="base", help="the base pack's id (default base)")
    parser.add_argument("--version", required=True, type=int, help="the pack's version")
    parser.add_argument("--out", required=True, metavar="FOLDER", help="writes FOLDER/ID-N.kvp/")


def run_pack_base(args: argparse.Namespace) -> int:
    from provisioning.packing import make_base_pack

    make_base_pack(
        Path(args.bert),
        args.id,
        args.version,
        Path(args.out),
        progress=lambda line: print(line, flush=True),
    )
    return 0


def add_sign_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pack", metavar="PACK", help="a .kvp folder, its .tar, or a list .json")
    parser.add_argument("--key", required=True, metavar="NAME.key", help="the signing key")


def run_sign(args: argparse.Namespace) -> int:
    from provisioning.sign_verify import sign_target

    print(sign_target(Path(args.pack), Path(args.key)))
    return 0


def add_revoke_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="the voice to revoke")
    parser.add_argument("--version", type=int, help="only this version (default: every one)")
    parser.add_argument("--reason", required=True, metavar="TEXT", help="why, for the report")
    parser.add_argument("--key", required=True, metavar="NAME.key", help="the signing key")
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="the list (.json; added to if it exists)"
    )


def run_revoke(args: argparse.Namespace) -> int:
    from provisioning.revocation import add_revocation, signature_path
    from provisioning.signing import load_private_key
    from provisioning.strict_json import PackFormatError

    out = Path(args.out)
    if out.suffix != ".json":
        raise PackFormatError(f"--out {out}: a revocation list is a .json file")
    revocations = add_revocation(
        out, args.id, args.version, args.reason, load_private_key(Path(args.key))
    )
    print(f"{out}: {len(revocations.entries)} revocation(s), signed -> {signature_path(out)}")
    for entry in revocations.entries:
        print(f"  {entry.describe()}")
    return 0


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pack", metavar="PACK", help="a .kvp folder, its .tar, or a list .json")
    parser.add_argument(
        "--trust", required=True, metavar="PUB_OR_DIR", help="a .pub key or a folder of them"
    )


def run_verify(args: argparse.Namespace) -> int:
    from provisioning.sign_verify import verify_target

    print(verify_target(Path(args.pack), Path(args.trust)))
    return 0


def add_review_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pack", metavar="PACK", help="a .kvp folder or its .tar (signed or not)")
    parser.add_argument("--out", required=True, metavar="DIR", help="writes DIR/index.html")
    parser.add_argument(
        "--backend",
        default="torch-eager",
        choices=("auto", "torch-eager", "onnxruntime", "torch-cuda", "tensorrt"),
        help="runtime the phrases are said on (default torch-eager, as the box's reference)",
    )
    parser.add_argument(
        "--trust",
        metavar="PUB_OR_DIR",
        help="check a signature, if the pack has one, against these keys",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        metavar="N",
        help="cap each segment at N semantic tokens (25 a second) for a quick draft",
    )


def run_review(args: argparse.Namespace) -> int:
    from provisioning.review import render_review
    from provisioning.signing import load_trust

    if args.max_tokens is not None and args.max_tokens < 1:
        raise ValueError(f"--max-tokens {args.max_tokens}: give a positive number")
    review = render_review(
        Path(args.pack),
        Path(args.out),
        backend=args.backend,
        trust=load_trust(Path(args.trust)) if args.trust else None,
        max_tokens=args.max_tokens,
        progress=lambda line: print(line, flush=True),
    )
    print(f"review sheet: {review.index}")
    for problem in review.problems:
        print(f"problem: {problem}")
    return 1 if review.problems else 0


#: (command, help, add arguments, run)
COMMANDS = (
    ("keygen", "make an Ed25519 signing key pair (NAME.key, NAME.pub)", add_keygen_arguments,
     run_keygen),
    ("pack", "make an unsigned voice pack from official files, phrases and consent",
     add_pack_arguments, run_pack),
    ("pack-base", "make an unsigned base pack carrying the shared BERT folder",
     add_pack_base_arguments, run_pack_base),
    ("review", "say every phrase with the pack's voice into DIR with an index.html review "
     "sheet", add_review_arguments, run_review),
    ("sign", "sign a pack, a base pack or a revocation list", add_sign_arguments, run_sign),
    ("revoke", "add a voice to a signed revocation list", add_revoke_arguments, run_revoke),
    ("verify", "check a pack or revocation list against trusted keys (exit 0 or 2)",
     add_verify_arguments, run_verify),
)  # fmt: skip
