#!/usr/bin/env python3
"""Fine-tune CLIP on a sample of your own records and show whether it helped.

    python finetune.py --sample 1566 --caption "{object_type} from the {period}, found at {findspot}"

Reads a metadata file (fetching the sample's images with fetch.py's machinery) or a
manifest.jsonl written by fetch.py, trains with MLX, evaluates retrieval before and after,
and writes runs/NAME/ with the best model (model/) and an HF/sentence-transformers export.
"""

from __future__ import annotations

import argparse
import sys

import mlx_clip  # noqa: F401  (first: puts a fast BLAS under MLX on Linux)
from mlx_clip.errors import InputError
from mlx_clip.finetune import FinetuneConfig, dry_run, run, sibling_module

# fetch.py's flags kept in the run's config (dest names); sample/margin go to fetch_records,
# the rest to fetcher.FetchConfig.
FETCH_KEYS = ("url_field", "path_field", "sample", "margin", "out", "concurrency", "per_host",
              "retries", "max_bytes")


def _has_flag(parser: argparse.ArgumentParser, flag: str) -> bool:
    return flag in parser._option_string_actions


def add_fetch_flags(parser: argparse.ArgumentParser) -> None:
    """fetch.py's shared flags (mlx_clip.fetch_cli.add_fetch_arguments when this package has it)."""
    fetch_cli = sibling_module("fetch_cli")
    if fetch_cli is not None:
        fetch_cli.add_fetch_arguments(parser)
        return
    group = parser.add_argument_group("records and sample (fetch.py's flags)")
    group.add_argument("--url-field", metavar="FIELD", help="record field holding the image URL (default: detected)")
    group.add_argument("--path-field", metavar="FIELD", help="record field holding a local image path instead of a URL")
    group.add_argument("--id-field", metavar="FIELD", help="record field holding the record id (default: id-like fields)")
    group.add_argument("--sample", metavar="N", type=int, help="use a random sample of N records (default: all)")
    group.add_argument("--margin", metavar="E", help="sample size for margin of error E (e.g. 0.025)")
    group.add_argument("--stratify", metavar="FIELD",
                       help="draw the sample, and the validation split, stratified by this field")
    group.add_argument("--seed", type=int, default=0, help="seed of the sample, split, captions, "
                       "augmentations and training order (default 0)")


def build_parser() -> argparse.ArgumentParser:
    d = FinetuneConfig()
    p = argparse.ArgumentParser(
        description="Fine-tune CLIP (MLX) on your images and their catalogue metadata; measures "
                    "retrieval before and after and exports a model llm and sentence-transformers load.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=d.model, help="model to start from: HF repo id, HF folder or MLX folder")
    p.add_argument("--runs-dir", default=d.runs_dir, help="folder that holds one subfolder per run")
    p.add_argument("--name", help="run name (folder under --runs-dir); default: the start time")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", default=d.data, metavar="RECORDS",
                     help="metadata file (JSON, JSONL or CSV); its sample is fetched before training")
    src.add_argument("--manifest", metavar="PATH", help="manifest.jsonl from fetch.py (images already fetched)")
    add_fetch_flags(p)
    g = p.add_argument_group("captions and evaluation")
    g.add_argument("--caption", action="append", default=[], metavar="TEMPLATE",
                   help='caption template with {field} or {dotted.field} paths, e.g. "{object_type} from the '
                        '{period}"; repeat for several, drawn at random per image and epoch; default: built from '
                        "the record's title, category and keyword fields")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="fraction of records held out for validation (deterministic for a seed)")
    g.add_argument("--label-field", help="record field whose values are classes for zero-shot accuracy")
    g.add_argument("--label-prompt", default=d.label_prompt, help="prompt for zero-shot classes; {label} is replaced")
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step (contrastive batch)")
    t.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training split")
    t.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    t.add_argument("--warmup", type=float, default=d.warmup,
                   help="linear warmup: a fraction of all steps when < 1, else a number of steps; then cosine decay")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="AdamW weight decay (never on biases, norms, embeddings or the temperature)")
    t.add_argument("--lock-image", action="store_true", help="freeze the image tower")
    t.add_argument("--lock-text", action="store_true", help="freeze the text tower")
    t.add_argument("--unlock-last", type=int, default=d.unlock_last, metavar="N",
                   help="train the last N layers (and final norm + projection) of locked towers")
    t.add_argument("--precision", choices=["float32", "bfloat16"], default=d.precision,
                   help="compute precision; bfloat16 keeps float32 master weights (Apple GPUs; slow on CPUs)")
    t.add_argument("--threads", type=int, default=d.threads, help="image loading threads")
    a = p.add_argument_group("augmentation (random resized crop and horizontal flip are always on)")
    a.add_argument("--crop-min-area", type=float, default=d.crop_min_area,
                   help="smallest random crop, as a fraction of the image's area")
    a.add_argument("--no-hflip", action="store_true", help="no random horizontal flips (e.g. text on objects)")
    a.add_argument("--vflip", action="store_true", help="random vertical flips")
    a.add_argument("--rotate", type=float, default=0.0, metavar="DEG", help="random rotation up to DEG degrees")
    a.add_argument("--color-jitter", type=float, default=0.0, metavar="S",
                   help="random brightness, contrast and saturation in [1-S, 1+S]")
    r = p.add_argument_group("run control")
    r.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue a stopped run exactly: 'latest' (of --name, or the newest run), a run folder "
                        "or a checkpoint folder; the run's saved settings are used")
    r.add_argument("--dry-run", action="store_true",
                   help="print records, captions, steps and the measured time and memory per epoch, then exit")
    if not _has_flag(p, "--no-progress"):
        r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    fetch = {k: (str(v) if k == "out" else v) for k in FETCH_KEYS if (v := getattr(args, k, None)) is not None}
    return FinetuneConfig(
        model=args.model, runs_dir=args.runs_dir, name=args.name, data=args.data, manifest=args.manifest,
        fetch=fetch, id_field=getattr(args, "id_field", None), stratify=getattr(args, "stratify", None),
        val_fraction=args.val_fraction, captions=args.caption, label_field=args.label_field,
        label_prompt=args.label_prompt, batch_size=args.batch_size, epochs=args.epochs, lr=args.lr,
        warmup=args.warmup, weight_decay=args.weight_decay, seed=getattr(args, "seed", 0) or 0,
        lock_image=args.lock_image, lock_text=args.lock_text, unlock_last=args.unlock_last,
        precision=args.precision, hflip=not args.no_hflip, vflip=args.vflip, rotate=args.rotate,
        color_jitter=args.color_jitter, crop_min_area=args.crop_min_area, threads=args.threads)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        if args.dry_run:
            dry_run(config)
        else:
            run(config, resume=args.resume, progress=not args.no_progress)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
