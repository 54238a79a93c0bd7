"""`--parquet OUT`: the collection as one Parquet file for pandas, Polars and DuckDB users.

Written with pyarrow (the optional extra `mlx-clip-finetune[parquet]`), streamed from the index
file in row groups, so a 72,000-row collection never sits in memory whole. Columns: `record_id`,
`title`, `image_path`, `record_url`, `vector` (a fixed-size list of float32, L2-normalised),
then one text column per catalogue field (a number or a list is written as its JSON text, so one
column has one type whatever the records hold).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import atomic_file
from .store import IndexFile

LEADING = ("record_id", "title", "image_path", "record_url")
ROW_GROUP = 4096


def require_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InputError("--parquet needs pyarrow: pip install 'mlx-clip-finetune[parquet]' (or pip install "
                         "pyarrow)") from None
    return pyarrow


def _cell(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def write_parquet(index: IndexFile, collection: str, out: Path) -> Path:
    """Write the collection `collection` of `index` to `out` (atomically: io.atomic_file)."""
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    cid, info = index.collection(collection)
    fields: dict[str, None] = {}
    for _, meta in index.metadata_rows(cid):
        fields.update(dict.fromkeys(k for k in meta if k not in LEADING))
    columns = list(LEADING) + list(fields)
    schema = pa.schema([pa.field(c, pa.string()) for c in LEADING]
                       + [pa.field("vector", pa.list_(pa.float32(), info.dimensions))]
                       + [pa.field(c, pa.string()) for c in fields])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = index.metadata_rows(cid, ROW_GROUP)
    with atomic_file(out) as handle, pq.ParquetWriter(handle, schema) as writer:
        for ids, vectors in index.vectors(cid, info.dimensions, ROW_GROUP):
            metas = [next(metadata) for _ in ids]  # same rows, same order (both ORDER BY rowid)
            assert [rid for rid, _ in metas] == ids
            data = {c: [_cell(m.get(c)) for _, m in metas] for c in columns}
            data["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), info.dimensions)
            writer.write_table(pa.table({f.name: data[f.name] for f in schema}, schema=schema))
    return out
