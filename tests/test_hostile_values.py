"""Records and run folders from someone else (issue 24): deep nesting is refused at reading, naming
the record; caption cleaning is linear in the field's length; reports and model cards print at
most MAX_SHOWN characters per value and MAX_ROWS rows per table, escape labels for Markdown
tables and HTML, and publish no local absolute path."""

from __future__ import annotations

import json
import time

import pytest

from mlx_clip.data.captions import CaptionBuilder, clean_caption
from mlx_clip.data.records import MAX_DEPTH, load_records
from mlx_clip.errors import InputError
from mlx_clip.outputs.model_card import render
from mlx_clip.outputs.report.html import MAX_ROWS, esc, table
from mlx_clip.outputs.shown_text import MAX_SHOWN, md_cell, public_value


def _nested(depth: int):
    value: object = "deep"
    for _ in range(depth - 1):
        value = {"a": [value]} if isinstance(value, str) else {"a": value}
    return value


@pytest.mark.parametrize("kind", ["json", "jsonl"])
def test_records_nested_800_deep_are_refused_at_reading_naming_the_record(tmp_path, kind):
    records = [{"id": "ok", "title": "a pot"}, {"id": "deep", "meta": _nested(800)}]
    path = tmp_path / f"records.{kind}"
    path.write_text(json.dumps(records) if kind == "json" else "\n".join(json.dumps(r) for r in records))
    with pytest.raises(InputError) as caught:
        load_records(path)
    where = "record 2" if kind == "json" else "line 2"
    assert str(caught.value) == f"{path}: {where}: nested more than {MAX_DEPTH} levels deep"


def test_records_nested_beyond_the_json_parser_are_one_line(tmp_path):
    path = tmp_path / "records.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested more than"):
        load_records(path)


def test_records_nested_a_few_levels_are_read(tmp_path):
    path = tmp_path / "records.json"
    path.write_text(json.dumps([{"id": "1", "meta": _nested(MAX_DEPTH - 1)}]))
    assert len(load_records(path).records) == 1


@pytest.mark.parametrize("run", ["- ", "|", "—", " -", ", "])
def test_caption_cleaning_of_a_1_mb_field_is_linear(run):
    """`[...]+$` on a long run of separators in mid-text was quadratic (120 KB: 47 s; 1 MB: ~an hour)."""
    text = "start " + run * (1_000_000 // len(run)) + " end"
    began = time.perf_counter()
    cleaned = clean_caption(text)
    assert time.perf_counter() - began < 5  # ~0.7 s here; the quadratic version does not finish
    assert cleaned.startswith("start") and cleaned.endswith("end")


def test_a_template_renders_a_1_mb_field_quickly():
    records = [{"title": "x - " * 250_000 + "y"}]
    began = time.perf_counter()
    builder = CaptionBuilder(["{title}, a find"], records)
    assert time.perf_counter() - began < 5 and builder.first(0).endswith("y, a find")


def test_report_prints_at_most_max_shown_characters_per_value_and_max_rows_per_table():
    field = "a" * 20_000_000
    assert len(esc(field)) == MAX_SHOWN and esc(field).endswith("…")
    assert esc("<b>") == "&lt;b&gt;"
    page = table(["label", "n"], [(field, i) for i in range(10_000)])
    assert page.count("<tr>") == MAX_ROWS + 2  # the header, the rows shown, and "(9,800 more rows not shown)"
    assert "9,800 more rows not shown" in page and len(page) < 200_000


def test_card_escapes_labels_and_caps_them():
    counts = {"Roman | Imperial": 5, "<script>alert(1)</script>": 3, "x" * 5000: 2}
    card = render({"data": {"labels": {"field": "period", "counts": counts}}})
    rows = [line for line in card.splitlines() if line.startswith("| ") and "records" not in line]
    assert len(rows) == 3
    for row in rows:  # exactly 3 columns: 4 unescaped pipes
        assert row.replace("\\|", "").count("|") == 4, row
    assert "<script>" not in card and "&lt;script&gt;" in card
    assert max(len(line) for line in rows) < MAX_SHOWN + 40


def test_published_card_names_no_local_folder(tmp_path):
    base = tmp_path / "models" / "my-base"
    config = {"model": str(base), "data": str(tmp_path / "records.json"), "out": str(tmp_path / "fetched"),
              "runs_dir": str(tmp_path / "runs"), "extra": {"folders": [str(tmp_path / "a")]}, "epochs": 3}
    card = render({"base_model": str(base), "config": config,
                   "data": {"source": str(tmp_path / "records.json"), "records": 10}})
    assert str(tmp_path) not in card and "/tmp" not in card
    assert "my-base (a local path)" in card and "records.json (a local path)" in card
    assert public_value("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    assert public_value("C:\\Users\\ann\\photos") == "photos (a local path)"
    assert md_cell("a|b\nc") == "a\\|b c"
