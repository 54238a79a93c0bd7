"""search.py: search an index (from index.py) in a local web page, or write the curator's CSVs
with --curate OUTDIR. Also `python -m mlx_clip.search` and the `mlx-clip-search` console script."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import __version__  # noqa: F401  (the package first: it puts a fast BLAS under MLX on Linux)
from .settings import DEFAULT_LABEL_PROMPT
from .command import add_version, run_command
from .errors import InputError
from .outputs.label_prompt import MAX_PROMPT_CHARS, usable_label_prompt
from .use.curate import CurateConfig, curate
from .use.places import UNPLACED
from .use.search_api import SearchService
from .use.search_server import MAX_UPLOAD_BYTES, make_server, serve
from .use.vector_search import read_collections

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="search.py",
        description="Open a local search page over one or two index files made by index.py: search by words or "
        "by an image, filter by any field or by place (km from a point), see two collections (base and fine-tuned) "
        "side by side, and a map of the collection by image similarity or by findspot. With --curate OUTDIR, write duplicates.csv, suggestions.csv and suspects.csv instead.")
    parser.add_argument("index_files", metavar="FILE", nargs="+", help="index file(s) (one or two)")
    parser.add_argument("--host", metavar="ADDR", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    parser.add_argument("--port", metavar="N", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--link-template", metavar="URL", help="each record's URL, e.g. https://opencontext.org/media/{uuid} "
                        "(overrides the one the index was made with)")
    places = parser.add_argument_group("findspots (a place filter and a map by longitude and latitude)")
    places.add_argument("--lat-field", metavar="FIELD", help="the field holding each record's latitude in decimal "
                        "degrees, e.g. lat or findspot.lat (default: a lat/latitude field found in the records)")
    places.add_argument("--lon-field", metavar="FIELD", help="the field holding its longitude, e.g. lon or findspot.lon")
    parser.add_argument("--max-upload-mb", metavar="MB", type=float, default=MAX_UPLOAD_BYTES / 2**20,
                        help="largest image upload accepted (default %(default)g MB)")
    curator = parser.add_argument_group("curator files (--curate)")
    curator.add_argument("--curate", metavar="OUTDIR", type=Path,
                         help="write the CSVs into OUTDIR (a subfolder per collection when there are several) and exit")
    curator.add_argument("--collection", metavar="NAME", help="only this collection (default: every one)")
    curator.add_argument("--threshold", metavar="S", type=float, default=0.95, help="duplicates: least similarity (default 0.95)")
    curator.add_argument("--max-pairs", metavar="N", type=int, default=100_000, help="duplicates: at most this many pairs")
    curator.add_argument("--label-field", metavar="FIELD", help="the field holding each record's label (default: the index's)")
    curator.add_argument("--label-prompt", metavar="TEXT", action="append",
                         help="prompt for zero-shot labels, {label} is replaced; repeat for a prompt ensemble "
                         "(default: the prompt the collection's model was fine-tuned with, when its run or "
                         f"model card records it, else {DEFAULT_LABEL_PROMPT!r})")
    return add_version(parser)


def run_curate(args, collections) -> None:
    from . import load

    if args.collection:
        collections = [c for c in collections if c.key == args.collection]
        if not collections:
            raise InputError(f"no collection {args.collection!r}")
    if not 0 < args.threshold <= 1.0001 or args.max_pairs < 1:
        raise InputError("--threshold must be in (0, 1] and --max-pairs at least 1")
    given = args.label_prompt
    unusable = [p for p in given or [] if not usable_label_prompt(p)]
    if unusable:
        raise InputError(f"--label-prompt {unusable[0]!r}: a prompt holds {{label}} where the label goes "
                         f"(and at most {MAX_PROMPT_CHARS} characters)")
    config = CurateConfig(args.threshold, args.max_pairs, args.label_field,
                          given[0] if given and len(given) == 1 else given)
    models: dict[str, object] = {}
    for found in collections:
        out = args.curate if len(collections) == 1 else args.curate / re.sub(r"[^\w.-]+", "_", found.key)
        source = found.info.model_source
        if source not in models:
            try:
                models[source] = load(source)
            except (OSError, InputError) as err:
                print(f"{found.key}: model {source} not loaded ({str(err).splitlines()[0]}): "
                      "no zero-shot suggestions", file=sys.stderr)
                models[source] = None
        written = curate(found, out, config, models[source])
        print(f"{found.key}: " + ", ".join(f"{out / name} ({rows:,} rows)" for name, rows in written.items()))


def search(args: argparse.Namespace) -> None:
    """Serve the page (until Ctrl-C) or, with --curate, write the CSVs."""
    if len(args.index_files) > 2:
        raise InputError("give one or two index files")
    if not 0 <= args.port <= 65535 or args.max_upload_mb <= 0:
        raise InputError("--port must be 0 to 65535 and --max-upload-mb above 0")
    collections = read_collections(args.index_files)
    if args.curate is not None:
        run_curate(args, collections)
        return
    service = SearchService(collections, link_template=args.link_template, lat_field=args.lat_field,
                            lon_field=args.lon_field)
    server = make_server(service, args.host, args.port, int(args.max_upload_mb * 2**20))
    for found in collections:
        coordinates = service.coordinates[found.key]
        places = f"; {coordinates.line()}" if coordinates else "; no coordinates (--lat-field, --lon-field)"
        if coordinates and coordinates.count < len(found):
            places += f": {UNPLACED}"
        print(f"{found.key}: {len(found):,} records from {found.info.model_source}{places}")
    serve(server)  # Ctrl-C stops the server: a normal end


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: search(args), interrupted=lambda: "interrupted; the index files are only read")

if __name__ == "__main__":
    sys.exit(main())
