"""Fine-tune CLIP on a sample of your own records and show whether it helped.

    python finetune.py --sample 1566 --caption "{object_type} from the {period}, found at {findspot}"

Reads a metadata file (fetching the sample's images with fetch.py's machinery) or a
manifest.jsonl written by fetch.py, trains with MLX, evaluates retrieval before and after,
and writes runs/NAME/ with the best model in model/ (the folder transformers, sentence-transformers,
llm and the hub all take).
"""

from __future__ import annotations

import argparse
import sys

from . import __version__  # noqa: F401  (the package first: it puts a fast BLAS under MLX on Linux)
from .command import add_version, run_command
from .settings import FinetuneConfig, add_arguments, config_from_args
from .run.dry_run import dry_run
from .run.folder import last_checkpoint_epoch, stopped_run
from .run.loop import run
from .train.distributed import is_main_process

def build_parser() -> argparse.ArgumentParser:
    """The flags of the config tree (mlx_clip.settings) plus finetune's own: resume, dry run, publishing."""
    p = argparse.ArgumentParser(
        prog="finetune.py",
        description="Fine-tune CLIP (MLX) on your images and their catalogue metadata; measures "
                    "retrieval before and after and exports a model llm and sentence-transformers load.")
    add_version(p)
    add_arguments(p)
    r = p.add_argument_group("run control")
    r.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue a stopped run exactly: 'latest' (of --name, or the newest run), a run folder "
                        "or a checkpoint folder; the run's saved settings are used")
    r.add_argument("--dry-run", action="store_true",
                   help="print records, captions, steps and the measured time and memory per epoch, then exit")
    s = p.add_argument_group("after the run")
    s.add_argument("--register", metavar="NAME",
                   help="register the fine-tuned model with llm as mlx-clip/NAME (see `llm mlx-clip list`); "
                        "the name is checked before training")
    s.add_argument("--replace", action="store_true",
                   help="with --register: point an existing NAME at this run's model (collections embedded "
                        "with the old one keep its vectors: re-embed them)")
    s.add_argument("--push-to-hub", metavar="REPO_ID",
                   help="upload the run's model/ folder (with its model card) to the Hugging Face hub")
    s.add_argument("--public", action="store_true", help="with --push-to-hub: make a new repository public "
                   "(default: private)")
    return p


def publish(run_dir, args: argparse.Namespace) -> None:
    """--register and --push-to-hub, after a finished run."""
    from .outputs.run_paths import RunPaths

    model = RunPaths(run_dir).published_model
    if args.register:
        from .registry import read_registry, register_model

        previous = read_registry().get(args.register)
        registered = register_model(args.register, model, replace=True, validate=False)
        if previous is not None and previous.source != registered.source:
            print(f"warning: mlx-clip/{args.register} pointed at {previous.source} and now at {registered.source}; "
                  f"re-embed collections made with the old model (llm collections list)", file=sys.stderr)
        print(f"registered with llm as {registered.model_id}: llm embed -m {registered.model_id} -c 'some text'")
    if args.push_to_hub:
        from .outputs.hub import push_to_hub

        url = push_to_hub(model, args.push_to_hub, private=not args.public)
        print(f"uploaded {model} to {url}")


def resume_hint(config: FinetuneConfig, resume: str | None) -> str:
    epoch = last_checkpoint_epoch(stopped_run(config, resume))
    return "run again (no checkpoint was written)" if epoch is None else f"--resume continues after epoch {epoch}"


def interrupted_line(config: FinetuneConfig | None, args: argparse.Namespace) -> str:
    """Ctrl-C's line: the last checkpoint is intact (checkpoints are written atomically)."""
    if args.dry_run:
        return "interrupted (dry run: nothing written)"
    epoch = last_checkpoint_epoch(stopped_run(config, args.resume)) if config else None
    return ("interrupted before the first epoch finished; no checkpoint yet, run again to start over"
            if epoch is None else f"interrupted after epoch {epoch}; --resume continues")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    state: dict[str, FinetuneConfig] = {}

    def work() -> None:
        config = state["config"] = config_from_args(args)
        if args.register and not args.dry_run:  # before hours of training, not after
            from .registry import check_free

            check_free(args.register, replace=args.replace)
        if args.push_to_hub and not args.dry_run:
            from .outputs.hub import check_login, check_repo_id

            check_repo_id(args.push_to_hub)
            check_login()
        if args.dry_run:  # under mlx.launch: rank 0 measures one process with the global batch
            if is_main_process():
                dry_run(config)
        else:
            run_dir = run(config, resume=args.resume, progress=config.fetch.progress)
            if is_main_process():  # under mlx.launch: rank 0 holds the run folder
                publish(run_dir, args)

    return run_command(work, interrupted=lambda: interrupted_line(state.get("config"), args),
                       again=lambda: resume_hint(state["config"], args.resume) if "config" in state else "run again")


if __name__ == "__main__":
    sys.exit(main())
