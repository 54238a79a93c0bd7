"""Does the findspot belong in the caption? Three fine-tuning runs on ONE split of your records,
differing only in the caption: without the place, with the place's name, with its coordinates;
then compare.py's paired table on their shared held-out test set, and what the place costs in
tokens per caption.

    python bench/findspot_experiment.py --data records.json --caption "{object_type} from the {period}" \\
        --place-field findspot --lat-field lat --lon-field lon \\
        --sample 1566 --stratify period --label-field object_type --group-field object_uri --name findspot

Every finetune.py flag works as it does there (the same parser); the runs are runs/NAME-no-place,
runs/NAME-place-name and runs/NAME-coordinates, and the comparison runs/NAME-compare/. A run
already finished with the same caption is reused, so a stopped experiment continues where it was.
This is finetune's run() three times and compare's paired intervals: no other training code.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlx_clip import __version__  # noqa: E402,F401  (first: it puts a fast BLAS under MLX on Linux)
from mlx_clip.command import run_command  # noqa: E402
from mlx_clip.data.captions import value_text  # noqa: E402
from mlx_clip.data.coordinates import checked_coordinates  # noqa: E402
from mlx_clip.data.dataset import is_manifest, read_manifest  # noqa: E402
from mlx_clip.data.place_captions import check_place_records, place_templates, token_cost  # noqa: E402
from mlx_clip.data.records import get_field_or_none, load_records  # noqa: E402
from mlx_clip.errors import InputError  # noqa: E402
from mlx_clip.finetune import build_parser as finetune_parser  # noqa: E402
from mlx_clip.io import write_json  # noqa: E402
from mlx_clip.outputs.run_paths import RunPaths  # noqa: E402
from mlx_clip.settings import FinetuneConfig, config_from_args  # noqa: E402

NOT_HERE = ("resume", "dry_run", "register", "push_to_hub")


def build_parser() -> argparse.ArgumentParser:
    parser = finetune_parser()
    parser.prog = "findspot_experiment.py"
    parser.description = ("Train three runs on one split of your records whose captions differ only in the place "
                          "(none, its name, its coordinates) and compare them on their shared test set.")
    group = parser.add_argument_group("the findspot experiment")
    group.add_argument("--place-field", metavar="FIELD", required=True, help="the field naming the findspot, e.g. findspot")
    group.add_argument("--lat-field", metavar="FIELD", required=True, help="its latitude in decimal degrees, e.g. lat or findspot.lat")
    group.add_argument("--lon-field", metavar="FIELD", required=True, help="its longitude, e.g. lon or findspot.lon")
    group.add_argument("--decimals", metavar="N", type=int, default=4,
                       help="decimals of the coordinates in the caption (default 4: about 11 m)")
    group.add_argument("--place-words", metavar="TEXT", default=", found at ",
                       help="the words between the caption and the place (default %(default)r)")
    return parser


def experiment_records(config: FinetuneConfig) -> tuple[list[dict], str, Callable[[int], str]]:
    """The records the runs read (the manifest, or the records file), their source and locator."""
    source = Path(config.manifest or config.data)
    if not source.is_file():
        raise InputError(f"{source}: not found; pass --data RECORDS (a records file or a fetch.py manifest)")
    if is_manifest(source):
        records = [item.record for item in read_manifest(source, config.fetch.id_field)]
        return records, str(source), lambda i: f"{source}: record {i + 1}"
    loaded = load_records(source, config.fetch.encoding)
    return loaded.records, str(source), loaded.where


def count_tokens_with(config: FinetuneConfig):
    """The base model's tokenizer (the runs' own), found before any fetch or training."""
    from mlx_clip.models.family import family_of, read_config
    from mlx_clip.models.weights import resolve_model_folder

    folder = resolve_model_folder(config.model)
    model_config = read_config(folder / "config.json")
    tokenizer = family_of(model_config).tokenizer_class.from_folder(folder, model_config.text.max_position_embeddings)
    return tokenizer.count_tokens, tokenizer.context_length


def finished_with(paths: RunPaths, caption: str) -> bool:
    """A run folder that finished training this caption (reused, not trained again)."""
    if not (paths.test_after.is_file() and paths.config.is_file()):
        return False
    return json.loads(paths.config.read_text(encoding="utf-8")).get("captions") == [caption]


def same_queries(folders: list[Path]) -> dict:
    """Each run's model scored with the SAME queries: the no-place run's test captions (the words
    people type), against each run's own test image embeddings; compare's rows and paired intervals.
    compare.py alone scores each run against its own captions, which hold the place."""
    import numpy as np

    import mlx_clip
    from mlx_clip.run.compare_runs import load_run, run_row
    from mlx_clip.train.evaluate import EvalDetails, retrieval_ranks

    runs = [load_run(folder) for folder in folders]
    queries = runs[0].details
    rescored = []
    for run in runs:
        model = mlx_clip.load(RunPaths(run.folder).published_model)
        caption_embeds = np.asarray(model.embed_texts(queries.captions))
        ranks = retrieval_ranks(run.details.image_embeds, caption_embeds, queries.caption_of_image)
        details = EvalDetails(run.details.image_embeds, caption_embeds, queries.captions, queries.caption_of_image, ranks)
        rescored.append(replace(run, details=details))
    return {"test_size": len(runs[0].record_ids), "fingerprint": runs[0].fingerprint, "base": None,
            "runs": [run_row(run, None if i == 0 else rescored[0], str(run.folder)) for i, run in enumerate(rescored)],
            "notes": [f"every run scored with the same {len(queries.captions)} queries: the test captions without "
                      "the place (what people type)"]}


def experiment(args: argparse.Namespace) -> None:
    from mlx_clip.run.compare_runs import main_compare, text_table
    from mlx_clip.run.loop import run

    given = [f"--{name.replace('_', '-')}" for name in NOT_HERE if getattr(args, name)]
    if given:
        raise InputError(f"{given[0]} is not for the experiment; run finetune.py on the run it made")
    config = config_from_args(args)
    if len(config.captions or []) != 1:
        raise InputError('give one --caption without the place, e.g. --caption "{object_type} from the {period}"')
    templates = place_templates(config.captions[0], args.place_field, args.lat_field, args.lon_field,
                                args.decimals, args.place_words)
    records, source, where = experiment_records(config)
    check_place_records(records, templates, {"--place-field": args.place_field}, source, where)
    coordinates = checked_coordinates(records, args.lat_field, args.lon_field, source)
    named = sum(bool(value_text(get_field_or_none(r, args.place_field))) for r in records)
    print(f"{source}: {len(records):,} records; {named:,} name a place ({args.place_field}); {coordinates.line()}")
    count_tokens, context_length = count_tokens_with(config)
    cost = token_cost(records, templates, count_tokens, context_length)
    print("tokens per caption (the model's tokenizer, with its start and end tokens):")
    for line in cost.lines():
        print("  " + line)
    name = config.name or "findspot"
    folders = []
    for variant, caption in templates.by_variant().items():
        run_config = replace(config, captions=[caption], name=f"{name}-{variant}")
        paths = RunPaths.of(config.runs_dir, run_config.name)
        print(f"\n== {variant}: --caption {caption!r} ==")
        if finished_with(paths, caption):
            print(f"{paths.root}: already finished with this caption; reused")
            folders.append(paths.root)
        else:  # a run stopped midway continues from its last checkpoint
            resume = str(paths.root) if paths.latest_checkpoint.is_file() else None
            folders.append(run(run_config, resume=resume, progress=config.fetch.progress))
    out = Path(config.runs_dir) / f"{name}-compare"
    print()
    main_compare([str(f) for f in folders], str(out))
    print("\nthe same queries for every run (the no-place test captions), each run's model and test images:")
    shared = same_queries(folders)
    print(text_table(shared))
    write_json(out / "same_queries.json", shared)
    write_json(out / "token_cost.json", {"templates": templates.by_variant(), **cost.as_dict()})
    print(f"wrote {out / 'same_queries.json'} and {out / 'token_cost.json'}")
    print("like for like: i2i (another photo of the object), zero_shot (the same label prompts), and the same-query "
          "table; compare's i2t and t2i rows score each run against its own captions, which for coordinates hold "
          "digits nobody types")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: experiment(args), interrupted=lambda: "interrupted; run the same command again "
                       "(finished runs are reused; a stopped one: finetune.py --resume latest --name NAME-VARIANT)")


if __name__ == "__main__":
    sys.exit(main())
