"""Fine-tune CLIP on a sample of your own records and show whether it helped.

    python finetune.py --sample 1566 --caption "{object_type} from the {period}, found at {findspot}"

Reads a metadata file (fetching the sample's images with fetch.py's machinery) or a
manifest.jsonl written by fetch.py, trains with MLX, evaluates retrieval before and after,
and writes runs/NAME/ with the best model (model/) and an HF/sentence-transformers export.
"""

from __future__ import annotations

import argparse
import errno
import sys

from . import __version__  # noqa: F401  (the package first: it puts a fast BLAS under MLX on Linux)
from .errors import InputError
from .fetch import add_fetch_arguments, fetch_config_from_args
from .config import FinetuneConfig
from .run.dry_run import dry_run
from .run.folder import last_checkpoint_epoch, stopped_run
from .run.loop import run
from .train.distributed import is_main_process

def build_parser() -> argparse.ArgumentParser:
    d = FinetuneConfig()
    p = argparse.ArgumentParser(
        prog="finetune.py",
        description="Fine-tune CLIP (MLX) on your images and their catalogue metadata; measures "
                    "retrieval before and after and exports a model llm and sentence-transformers load.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--version", action="version", version=f"mlx-clip-finetune {__version__}")
    p.add_argument("--model", default=d.model, help="model to start from: HF repo id, HF folder or MLX folder")
    p.add_argument("--runs-dir", default=d.runs_dir, help="folder that holds one subfolder per run")
    p.add_argument("--name", help="run name (folder under --runs-dir); default: the start time")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", default=d.data, metavar="RECORDS",
                     help="metadata file (JSON, JSONL or CSV); its sample is fetched before training")
    src.add_argument("--manifest", metavar="PATH", help="manifest.jsonl from fetch.py (images already fetched)")
    add_fetch_arguments(p)  # fetch.py's record, sample and download flags
    g = p.add_argument_group("captions and evaluation")
    g.add_argument("--caption", action="append", default=[], metavar="TEMPLATE",
                   help='caption template with {field} or {dotted.field} paths, e.g. "{object_type} from the '
                        '{period}"; repeat for several, drawn at random per image and epoch; default: built from '
                        "the record's title, category and keyword fields")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="fraction of records held out for validation (deterministic for a seed)")
    g.add_argument("--test-fraction", type=float, default=None,
                   help="fraction of distinct images held out as the test set that gives the before/after "
                        "figures (never trained on, never used to pick the epoch); default 0.1 when that is "
                        "at least 20 images, else none")
    g.add_argument("--label-field", help="record field whose values are classes for zero-shot accuracy")
    g.add_argument("--label-prompt", action="append", metavar="PROMPT", default=argparse.SUPPRESS,
                   help=f"prompt for zero-shot classes, {{label}} is replaced (default: {d.label_prompt!r}); repeat "
                        "for a prompt ensemble: each class's prompt embeddings averaged, as CLIP does")
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
    s = p.add_argument_group("after the run")
    s.add_argument("--register", metavar="NAME",
                   help="register the fine-tuned model with llm as mlx-clip/NAME (see `llm mlx-clip list`)")
    s.add_argument("--push-to-hub", metavar="REPO_ID",
                   help="upload the run's export (with its model card) to the Hugging Face hub")
    s.add_argument("--public", action="store_true", help="with --push-to-hub: make a new repository public "
                   "(default: private)")
    return p


def label_prompts(given: list[str] | None) -> str | list[str]:
    """No --label-prompt: the default; one: that prompt (as before); several: the ensemble."""
    if not given:
        return FinetuneConfig().label_prompt
    return given[0] if len(given) == 1 else given


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    fetch_config = fetch_config_from_args(args)
    fetch = {"sample": args.sample, "margin": args.margin, "out": str(fetch_config.out),
             "url_field": fetch_config.url_field, "path_field": fetch_config.path_field,
             "encoding": fetch_config.encoding,
             "concurrency": fetch_config.concurrency, "per_host": fetch_config.per_host,
             "connect_timeout": fetch_config.connect_timeout, "read_timeout": fetch_config.read_timeout,
             "deadline": fetch_config.deadline, "allow_private": fetch_config.allow_private,
             "retries": fetch_config.retries, "max_bytes": fetch_config.max_bytes,
             "progress": fetch_config.progress}
    fetch = {k: v for k, v in fetch.items() if v is not None}
    return FinetuneConfig(
        model=args.model, runs_dir=args.runs_dir, name=args.name, data=args.data, manifest=args.manifest,
        fetch=fetch, id_field=getattr(args, "id_field", None), stratify=getattr(args, "stratify", None),
        val_fraction=args.val_fraction, test_fraction=args.test_fraction,
        captions=args.caption, label_field=args.label_field,
        label_prompt=label_prompts(getattr(args, "label_prompt", None)), batch_size=args.batch_size,
        epochs=args.epochs, lr=args.lr,
        warmup=args.warmup, weight_decay=args.weight_decay, seed=getattr(args, "seed", 0) or 0,
        lock_image=args.lock_image, lock_text=args.lock_text, unlock_last=args.unlock_last,
        precision=args.precision, hflip=not args.no_hflip, vflip=args.vflip, rotate=args.rotate,
        color_jitter=args.color_jitter, crop_min_area=args.crop_min_area, threads=args.threads)


def publish(run_dir, args: argparse.Namespace) -> None:
    """--register and --push-to-hub, after a finished run."""
    if args.register:
        from .registry import read_registry, register_model

        previous = read_registry().get(args.register)
        registered = register_model(args.register, run_dir / "model", replace=True, validate=False)
        if previous is not None and previous.source != registered.source:
            print(f"warning: mlx-clip/{args.register} pointed at {previous.source} and now at {registered.source}; "
                  f"re-embed collections made with the old model (llm collections list)", file=sys.stderr)
        print(f"registered with llm as {registered.model_id}: llm embed -m {registered.model_id} -c 'some text'")
    if args.push_to_hub:
        from .outputs.hub import push_to_hub

        url = push_to_hub(run_dir / "export", args.push_to_hub, private=not args.public)
        print(f"uploaded {run_dir / 'export'} to {url}")


def write_error_line(err: OSError, resume_hint: str) -> str | None:
    """One line for an output folder that is full or cannot be written; None for other errors."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"error: {err.filename}: {err.strerror}; free space, then {resume_hint}"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"error: {err.filename}: {err.strerror}"
    return None


def resume_hint(config: FinetuneConfig, resume: str | None) -> str:
    epoch = last_checkpoint_epoch(stopped_run(config, resume))
    return "run again (no checkpoint was written)" if epoch is None else \
        f"--resume continues after epoch {epoch}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = None
    try:
        config = config_from_args(args)
        if args.push_to_hub and not args.dry_run:  # before hours of training, not after
            from .outputs.hub import check_login, check_repo_id

            check_repo_id(args.push_to_hub)
            check_login()
        if args.dry_run:  # under mlx.launch: rank 0 measures one process with the global batch
            if is_main_process():
                dry_run(config)
        else:
            run_dir = run(config, resume=args.resume, progress=not args.no_progress)
            if is_main_process():  # under mlx.launch: rank 0 holds the run folder
                publish(run_dir, args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        line = write_error_line(err, resume_hint(config, args.resume) if config else "run again")
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the last checkpoint is intact (checkpoints are written atomically)
        epoch = last_checkpoint_epoch(stopped_run(config, args.resume)) if config and not args.dry_run else None
        print("interrupted (dry run: nothing written)" if args.dry_run else
              "interrupted before the first epoch finished; no checkpoint yet, run again to start over"
              if epoch is None else f"interrupted after epoch {epoch}; --resume continues", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
