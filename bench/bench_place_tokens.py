"""What a findspot costs in CLIP tokens: coordinates vs place names, with the real CLIP BPE
(OpenAI's vocabulary as open-clip-torch ships it, read by mlx_clip's own tokenizer), and how many
captions of a real catalogue a 77-token context would then cut.

    python bench/bench_place_tokens.py --json bench/results/place_tokens.json

Token counts do not depend on the machine. The coordinates are random (seeded, uniform over
latitude -60..70 and longitude -180..180: where finds are), the place names are well-known
archaeological sites (their spelling is what is measured), and the catalogue is the emoji set
bundled with mlx_clip (1,906 real records), standing in for caption lengths: no archaeological
catalogue is available here.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mlx_clip import __version__  # noqa: E402
from mlx_clip.data.captions import Template  # noqa: E402
from mlx_clip.data.records import read_records  # noqa: E402
from mlx_clip.models.tokenizer import CLIPTokenizer  # noqa: E402

SITES = ["Athens", "Corinth", "Knossos", "Olympia", "Delphi", "Mycenae", "Pompeii", "Herculaneum", "Ostia", "Rome",
         "Vindolanda", "Stonehenge", "Sutton Hoo", "Çatalhöyük", "Göbekli Tepe", "Troy", "Ephesus", "Petra", "Babylon",
         "Ur", "Nineveh", "Persepolis", "Memphis", "Thebes", "Amarna", "Giza", "Carthage", "Leptis Magna",
         "Mohenjo-daro", "Harappa", "Anyang", "Angkor", "Teotihuacan", "Chichen Itza", "Tikal", "Cusco",
         "Machu Picchu", "Cahokia", "Great Zimbabwe", "Aksum", "Jericho", "Alexandria", "Syracuse", "Paestum",
         "Vergina", "Akrotiri", "Phaistos", "Hattusa", "Nimrud", "Sardis", "Pergamon", "Palmyra", "Dura-Europos",
         "Hadrian's Wall", "Colchester", "York", "Trier", "Xanten", "Aquincum", "Carnuntum"]
WORDS = ", found at "
CAPTION = "{name}, an emoji of {subcategory}, {keywords}"  # the bundled set's longest natural template


def stats(counts: list[int]) -> dict:
    return {"min": min(counts), "median": statistics.median(counts), "max": max(counts)}


def measure(tokenizer: CLIPTokenizer, pairs: int, seed: int) -> dict:
    count = tokenizer.count_tokens
    special = count([""])[0]  # start and end tokens
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(-60, 70, pairs), rng.uniform(-180, 180, pairs)
    coordinates = {}
    for decimals in (2, 4, 6):
        texts = [f"{a:.{decimals}f}, {b:.{decimals}f}" for a, b in zip(lat, lon)]
        coordinates[f"{decimals} decimals"] = dict(stats([n - special for n in count(texts)]), example=texts[0])
    degrees = [f"{abs(a):.4f}° {'N' if a >= 0 else 'S'}, {abs(b):.4f}° {'E' if b >= 0 else 'W'}" for a, b in zip(lat, lon)]
    coordinates["4 decimals, ° N/E"] = dict(stats([n - special for n in count(degrees)]), example=degrees[0])
    names = [n - special for n in count(SITES)]
    words = count([WORDS.rstrip()])[0] - special  # ",", "found", "at"
    records = read_records(ROOT / "mlx_clip" / "demo" / "emoji" / "records.jsonl")
    captions = [Template.parse(CAPTION).render(r) for r in records]
    variants = {"no place": captions,
                "+ place name": [f"{c}{WORDS}{SITES[i % len(SITES)]}" for i, c in enumerate(captions)],
                "+ 4-decimal coordinates": [f"{c}{WORDS}{lat[i % pairs]:.4f}, {lon[i % pairs]:.4f}"
                                            for i, c in enumerate(captions)]}
    limit = tokenizer.context_length
    tokens = {label: count(texts) for label, texts in variants.items()}
    return {"tokenizer": "OpenAI CLIP BPE (open-clip-torch's bpe_simple_vocab_16e6.txt.gz) via mlx_clip CLIPTokenizer",
            "context_length": limit, "coordinate_pairs": pairs, "seed": seed,
            "coordinates_tokens": coordinates,
            "place_name_tokens": dict(stats(names), per_site=dict(zip(SITES, names))),
            "words_tokens": {"text": WORDS, "tokens": words},
            "catalogue": {"records": "mlx_clip/demo/emoji/records.jsonl", "count": len(records), "template": CAPTION,
                          "caption_tokens": {label: stats(n) for label, n in tokens.items()},
                          "captions_over_limit": {label: sum(n > limit for n in counts) for label, counts in tokens.items()},
                          "longest_no_place_caption_that_keeps_its_coordinates":
                              limit - words - int(coordinates["4 decimals"]["median"])},
            "versions": {"mlx_clip": __version__, "python": platform.python_version()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from clip_fixtures import write_openai_vocab

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = CLIPTokenizer.from_folder(write_openai_vocab(Path(folder)))
        result = measure(tokenizer, args.pairs, args.seed)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
