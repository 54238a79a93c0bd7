"""Convert CLIP and SigLIP weights between Hugging Face and MLX folders.

  python convert.py --from openai/clip-vit-base-patch32 --to models/clip-b32          # HF -> MLX
  python convert.py --from models/clip-b32 --to exports/clip-b32                      # MLX -> HF
  python convert.py --from runs/demo/model --to exports/demo --format hf --push-to-hub alice/demo-clip

The output format defaults to the other one than the source's (an MLX folder holds
mlx_model.safetensors); --format names it. The older --hf-path/--mlx-path/--to-hf still work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlx.utils import tree_flatten

from .command import add_version, run_command
from .errors import InputError
from .models.clip import CLIP, DTYPES, SigLIP, dtype_name, load
from .models.config import dtype_key
from .models.weights import MLX_WEIGHTS
from .models.family import family_of
from .outputs.export import export_hf
from .models.weights import is_repo_id
from .outputs.card_info import CardInfo


FORMATS = ("mlx", "hf")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="convert.py",
        description="Convert CLIP or SigLIP between Hugging Face (transformers / sentence-transformers) and MLX folders.",
    )
    add_version(parser)
    parser.add_argument("--from", dest="source", metavar="MODEL",
                        help="the model to read: an MLX or HF folder, or a hub repo id")
    parser.add_argument("--to", dest="target", metavar="FOLDER", help="the folder to write")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="what to write: mlx (mlx_model.safetensors) or hf (transformers + "
                             "sentence-transformers). Default: the other format than --from's; hf with "
                             "--push-to-hub")
    parser.add_argument("--dtype", type=dtype_key, choices=sorted(DTYPES), default=None,
                        help="store the weights in this dtype (default: as stored in the source); bf16, fp16 "
                             "and fp32 also work. float32 on CPUs; bfloat16/float16 halve memory on Apple GPUs")
    # the spelling before --from/--to: --hf-path was the input, or the output with --to-hf
    parser.add_argument("--hf-path", help=argparse.SUPPRESS)
    parser.add_argument("--mlx-path", help=argparse.SUPPRESS)
    parser.add_argument("--to-hf", action="store_true", help=argparse.SUPPRESS)
    hub = parser.add_argument_group("publishing (with --format hf)")
    hub.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                     help="after the export, write its model card (README.md) and upload the folder to "
                          "this Hugging Face hub repo (OWNER/NAME). Uses your HF_TOKEN or `hf auth login`; "
                          "the token is never written anywhere")
    visibility = hub.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=True,
                            help="create the hub repo private (the default)")
    visibility.add_argument("--public", dest="private", action="store_false",
                            help="create the hub repo public (an existing repo keeps its visibility)")
    hub.add_argument("--license", default=None,
                     help="licence id for the model card (default: the base model's licence if known, else 'other')")
    hub.add_argument("--base-model", default=None,
                     help="hub repo id of the model this one was converted or fine-tuned from, for the card "
                          "(default: read from the run's config.json next to --from, if any)")
    return parser.parse_args(argv)


def resolve_paths(args: argparse.Namespace) -> argparse.Namespace:
    """--from, --to and --format, also from the older --hf-path/--mlx-path/--to-hf; one line when missing."""
    legacy = args.hf_path is not None or args.mlx_path is not None or args.to_hf
    if legacy and (args.source or args.target):
        raise InputError("use --from and --to (not with --hf-path/--mlx-path/--to-hf)")
    if legacy:
        source, target = (args.mlx_path, args.hf_path) if args.to_hf else (args.hf_path, args.mlx_path)
        fmt = "hf" if args.to_hf else "mlx"
    else:
        source, target, fmt = args.source, args.target, args.format
    if not source or not target:
        raise InputError("name the model to read and the folder to write: --from MODEL --to FOLDER")
    if Path(source).exists() and Path(target).resolve() == Path(source).resolve():
        raise InputError(f"--to {target}: is the folder --from reads; write the conversion to another folder "
                         "(one folder holds one model)")
    if fmt is None:  # the other format than the source's; an upload is always an HF export
        fmt = "hf" if args.push_to_hub or (Path(source) / MLX_WEIGHTS).is_file() else "mlx"
    return argparse.Namespace(**{**vars(args), "source": source, "target": target, "format": fmt,
                                 "hf_path": None, "mlx_path": None, "to_hf": False})  # resolved once is resolved


def card_info(args: argparse.Namespace, model: CLIP | SigLIP) -> CardInfo:
    """Card info for an export of --from: when it is a run's model/, the card that run wrote
    (CardInfo.from_run, the one owner), else a bare one."""
    from .outputs.run_paths import RunPaths

    base = args.base_model
    if base is None and is_repo_id(model.config.raw.get("_name_or_path")):
        base = model.config.raw["_name_or_path"]
    overrides = dict(base_model=base, license=args.license, repo_id=args.push_to_hub,
                     model_type=family_of(model).model_type)
    run = RunPaths(Path(resolve_paths(args).source).parent)
    if run.metrics.is_file() and run.config.is_file():
        return CardInfo.from_run(run.root, **overrides)
    return CardInfo(**overrides)


def convert(args: argparse.Namespace) -> None:
    """Read --from, write --to in --format, and publish it with --push-to-hub."""
    args = resolve_paths(args)
    if args.push_to_hub and args.format != "hf":
        raise InputError("--push-to-hub uploads a Hugging Face export: add --format hf to write --to "
                         "as one and publish that")
    if args.push_to_hub:
        from .outputs.hub import check_login, check_repo_id

        check_repo_id(args.push_to_hub)  # before the conversion, not after
        check_login()
    model = load(args.source, dtype=args.dtype)
    out = export_hf(model, args.target) if args.format == "hf" else model.save(args.target)
    print(f"wrote {out} ({args.format.upper()} folder, {dtype_name(model.dtype)}, "
          f"{sum(v.size for _, v in tree_flatten(model.parameters())):,} parameters)")
    if args.push_to_hub:
        from .outputs.hub import push_to_hub

        url = push_to_hub(out, args.push_to_hub, private=args.private, card=card_info(args, model))
        print(f"uploaded {out} with its model card to {url} ({'private' if args.private else 'public'})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: convert(args), interrupted=lambda: "interrupted; each file is written whole or not at all: run the same command again")


if __name__ == "__main__":
    sys.exit(main())
