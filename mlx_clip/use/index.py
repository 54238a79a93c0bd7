"""index.py: embed every record of a collection with a model into one SQLite file in llm's own
embeddings schema (`llm similar NAME -d FILE.db -c "a bronze coin"`), for search.py and llm.

fetch's record flags (--url-field, --path-field, --id-field, --max-side, --timeout, ...) are the
config tree's `fetch` settings, read the same way; `--out` here is the index file, and the
images go to `--images DIR` (default: FILE's folder / FILE_images).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..flags import add_config_arguments, apply, given
from ..settings import FinetuneConfig
from ..command import add_version, run_command
from ..data.decode_threads import DEFAULT_THREADS
from .embed_collection import IndexSettings, build_index


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="index.py", conflict_handler="resolve",
        description="Embed every record of a records file, fetch.py manifest or ImageFolder with a model "
        "folder, run folder or hub id into FILE.db (llm's embeddings schema plus which model made it). "
        "Re-running embeds only what is new or changed.")
    add_config_arguments(parser, FinetuneConfig, only=("fetch",))  # fetch's record and download flags
    main = parser.add_argument_group("index")
    main.add_argument("--model", required=True, metavar="MODEL",
                      help="a model folder, a run folder (runs/NAME: its model/) or a Hugging Face hub repo id")
    main.add_argument("--data", required=True, type=Path, metavar="RECORDS",
                      help="records file (JSON, JSONL, CSV), fetch.py manifest or folder, or an ImageFolder: "
                      "every record is indexed, not a sample")
    main.add_argument("--out", required=True, type=Path, metavar="FILE.db",
                      help="the index file (created, or a collection added or updated in it)")
    main.add_argument("--collection", metavar="NAME",
                      help="collection name, also the llm model name mlx-clip/NAME (default: the model "
                      "folder's or run's name)")
    main.add_argument("--images", "--fetch.out", dest="images", type=Path, metavar="DIR",
                      help="where fetched images, index-manifest.jsonl and index-failures.jsonl go (default: "
                      "FILE_images beside FILE.db); the folder a training sample was fetched into works too: its "
                      "images are reused and its manifest.jsonl is left as it is")
    main.add_argument("--link-template", metavar="URL",
                      help="each record's own page, fields in braces: https://opencontext.org/media/{uuid}")
    main.add_argument("--title-field", metavar="FIELD",
                      help="the field shown as a record's title (default: title, name, caption, label or "
                      "description, the first the records have)")
    main.add_argument("--label-field", metavar="FIELD",
                      help="the catalogue's label (type, category), remembered for search.py's map and CSVs")
    main.add_argument("--parquet", type=Path, metavar="OUT",
                      help="also write the collection as Parquet (record id, vector, fields) for pandas/DuckDB; "
                      "needs pyarrow")
    main.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per model call (default: 64)")
    main.add_argument("--threads", type=int, default=DEFAULT_THREADS, metavar="N",
                      help=f"threads decoding images while the model embeds (default: {DEFAULT_THREADS})")
    add_version(parser)
    return parser


INDEX_LISTS = "index-"
"""index-manifest.jsonl, index-failures.jsonl: --images may name the folder a training sample was
fetched into (its images are then reused), and that sample's manifest.jsonl stays the sample's."""


def settings_from(args: argparse.Namespace) -> IndexSettings:
    fetch = apply(FinetuneConfig(), given(args, FinetuneConfig)).fetch
    images = args.images or args.out.with_name(f"{args.out.stem}_images")
    fetch = apply(fetch, {"out": images, "list_prefix": INDEX_LISTS})
    return IndexSettings(model=args.model, data=args.data, out=args.out, fetch=fetch, collection=args.collection,
                         link_template=args.link_template, title_field=args.title_field,
                         label_field=args.label_field, batch_size=args.batch_size, threads=args.threads,
                         parquet=args.parquet, progress=fetch.progress)


def main(argv: list[str] | None = None) -> int:
    """Run index.py; returns the exit code (2 for bad input, with one line on stderr)."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: print(build_index(settings_from(args))),
                       interrupted=lambda: "interrupted; run the same command again to resume (embedded batches are kept)",
                       again=lambda: "run the same command again (embedded batches are kept)")
