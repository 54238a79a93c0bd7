"""Convert CLIP and SigLIP weights between Hugging Face and MLX folders.

  python convert.py --hf-path openai/clip-vit-base-patch32 --mlx-path mlx_models/b32
  python convert.py --to-hf --mlx-path runs/demo/model --hf-path exports/demo
  python convert.py --to-hf --mlx-path runs/demo/model --hf-path exports/demo --push-to-hub alice/demo-clip
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlx.utils import tree_flatten

from . import __version__
from .errors import InputError, error_line, write_error_line
from .models.clip import CLIP, DTYPES, SigLIP, load
from .models.family import family_of
from .outputs.export import export_hf
from .models.weights import is_repo_id
from .outputs.card_info import CardInfo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="convert.py",
        description="Convert CLIP or SigLIP between Hugging Face (transformers / sentence-transformers) and MLX folders.",
    )
    parser.add_argument("--version", action="version", version=f"mlx-clip-finetune {__version__}")
    parser.add_argument("--hf-path", required=True,
                        help="HF model: a local folder or a hub repo id (input), or with --to-hf the folder to write")
    parser.add_argument("--mlx-path", required=True,
                        help="MLX model folder: the folder to write, or with --to-hf the folder to read")
    parser.add_argument("--to-hf", action="store_true",
                        help="convert MLX -> HF (writes model.safetensors, config, tokenizer, preprocessor "
                             "and sentence-transformers files) instead of HF -> MLX")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="store the weights in this dtype (default: as stored in the source). "
                             "float32 on CPUs; bfloat16/float16 halve memory on Apple GPUs")
    hub = parser.add_argument_group("publishing (with --to-hf)")
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
                          "(default: read from the run's config.json next to --mlx-path, if any)")
    return parser.parse_args(argv)


def card_info(args: argparse.Namespace, model: CLIP | SigLIP) -> CardInfo:
    """Card info for an export of --mlx-path: when it is a run's model/, the card that run wrote
    (CardInfo.from_run, the one owner), else a bare one."""
    from .outputs.run_paths import RunPaths

    base = args.base_model
    if base is None and is_repo_id(model.config.raw.get("_name_or_path")):
        base = model.config.raw["_name_or_path"]
    overrides = dict(base_model=base, license=args.license, repo_id=args.push_to_hub,
                     model_type=family_of(model).model_type)
    run = RunPaths(Path(args.mlx_path).parent)
    if run.metrics.is_file() and run.config.is_file():
        return CardInfo.from_run(run.root, **overrides)
    return CardInfo(**overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.push_to_hub and not args.to_hf:
            raise InputError("--push-to-hub uploads a Hugging Face export: add --to-hf to convert "
                             "--mlx-path into the --hf-path folder and publish that")
        if args.push_to_hub:
            from .outputs.hub import check_login, check_repo_id

            check_repo_id(args.push_to_hub)  # before the conversion, not after
            check_login()
        if args.to_hf:
            model = load(args.mlx_path, dtype=args.dtype)
            out = export_hf(model, args.hf_path)
            if args.push_to_hub:
                from .outputs.hub import push_to_hub

                info = card_info(args, model)
                url = push_to_hub(out, args.push_to_hub, private=args.private, card=info)
        else:
            model = load(args.hf_path, dtype=args.dtype)
            out = model.save(args.mlx_path)
    except InputError as err:
        print(error_line(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; each file is written whole or not at all: run the same command again", file=sys.stderr)
        return 130
    except OSError as err:  # a read-only or full output folder, an unreadable model file
        print(write_error_line(err, "run again") or error_line(err), file=sys.stderr)
        return 2 if write_error_line(err, "run again") else 1
    print(f"wrote {out} ({model.dtype}, {sum(v.size for _, v in tree_flatten(model.parameters())):,} parameters)")
    if args.push_to_hub:
        print(f"uploaded {out} with its model card to {url} ({'private' if args.private else 'public'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
