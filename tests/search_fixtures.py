"""Index files for the search and curator tests: real embeddings, by tiny random CLIPs, of the
bundled emoji images (and of built variants of them), written with IndexFile as index.py would."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from PIL import Image, ImageEnhance

import mlx_clip
from mlx_clip.use.store import CollectionInfo, IndexFile

EMOJI = Path(mlx_clip.__file__).resolve().parent / "demo" / "emoji"
HOSTILE_TITLE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def emoji_records(count: int) -> list[dict]:
    """The first `count` emoji records with two categories at least (fields as in the catalogue)."""
    lines = (EMOJI / "records.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    picked = [r for r in records if r["category"] in ("Smileys & Emotion", "Animals & Nature", "Food & Drink")]
    step = max(1, len(picked) // count)
    return [dict(r, image_path=str(EMOJI / r["image_path"])) for r in picked[::step][:count]]


def write_collection(path: Path, name: str, model_folder: Path, records: list[dict], label_field: str | None = None,
                     link_template: str | None = None) -> None:
    """Embed each record's image with the model at `model_folder` and store the rows as index.py does."""
    model = mlx_clip.load(model_folder)
    vectors = model.embed_images([r["image_path"] for r in records])
    info = CollectionInfo(name=name, model_id=f"mlx-clip/{name}", model_source=str(model_folder), family="clip",
                          dimensions=int(vectors.shape[1]), records_source="test", link_template=link_template,
                          label_field=label_field, title_field="name")
    rows = []
    for record, vector in zip(records, vectors):
        meta = dict(record, record_id=record["id"], title=record.get("name") or record["id"],
                    sha256=hashlib.sha256(Path(record["image_path"]).read_bytes()).hexdigest())
        if link_template:
            meta["record_url"] = link_template.format(**record)
        rows.append((record["id"], vector, meta["title"], b"", meta))
    with IndexFile(path, create=True) as index:
        index.upsert(index.open_collection(info), rows)


def variants(source: Path, folder: Path, stem: str, count: int) -> list[Path]:
    """`count` slightly different copies of an image: shifted crops and brightness (not identical files)."""
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as opened:
        image = opened.convert("RGBA")
    out = []
    for i in range(count):
        margin = 1 + i % 3
        crop = image.crop((margin, margin // 2, image.width - margin // 2, image.height - margin))
        rgb = Image.alpha_composite(Image.new("RGBA", crop.size, (255, 255, 255, 255)), crop).convert("RGB")
        path = folder / f"{stem}-{i}.png"
        ImageEnhance.Brightness(rgb).enhance(1.0 - 0.02 * i).save(path)
        out.append(path)
    return out


def build_search_index(folder: Path, base_model: Path, vocab: Path) -> dict:
    """base (tiny model, seed 0) and tuned (seed 1) over 30 emoji records, one of them hostile, in
    index.db; a 10-record collection also named base in other.db."""
    from clip_fixtures import make_hf_clip

    tuned = make_hf_clip(folder / "finds" / "model", vocab_folder=vocab, seed=1)  # where a run keeps its model
    records = emoji_records(30)
    records[3] = dict(records[3], name=HOSTILE_TITLE, subcategory="<b>bold</b>")
    records[5] = dict(records[5], media=[{"role": "primary", "rights": None}], note=None)  # a nested export's fields
    template = "https://example.org/emoji/{unicode}"
    write_collection(folder / "index.db", "base", base_model, records, label_field="category", link_template=template)
    write_collection(folder / "index.db", "tuned", tuned, records, label_field="category", link_template=template)
    write_collection(folder / "other.db", "base", tuned, records[:10])
    return {"index": folder / "index.db", "other": folder / "other.db", "records": records,
            "models": {"base": base_model, "tuned": tuned}}


class RunningServer:
    """search_server on a free port in a thread, stopped by `stop()`."""

    def __init__(self, service, **kwargs):
        from mlx_clip.use.search_server import make_server

        self.server = make_server(service, "127.0.0.1", 0, **kwargs)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
