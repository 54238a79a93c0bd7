"""Caption templates: dotted fields, empty fields leave no debris, defaults skip ids and urls."""

import numpy as np
import pytest

from mlx_clip.data.captions import CaptionBuilder, Template, default_caption
from mlx_clip.data.dataset import Item, split
from mlx_clip.errors import InputError

T = "{object_type} from the {period}, found at {findspot}"


@pytest.mark.parametrize("record, expected", [
    ({"object_type": "coin", "period": "Roman", "findspot": "Bath"}, "coin from the Roman, found at Bath"),
    ({"object_type": "coin", "period": "", "findspot": "Bath"}, "coin, found at Bath"),
    ({"object_type": "coin", "period": None}, "coin"),
    ({"object_type": "coin", "findspot": "  "}, "coin"),
    ({"period": "Roman", "findspot": "Bath"}, "from the Roman, found at Bath"),
    ({"object_type": ["coin", "token"], "period": "Roman", "findspot": []}, "coin, token from the Roman"),
    ({}, ""),
])
def test_empty_fields_leave_no_debris(record, expected):
    assert Template.parse(T).render(record) == expected


def test_dotted_paths_numbers_and_brackets():
    template = Template.parse("{name} ({date}), found at {findspot.lat}, {findspot.lon}")
    assert template.render({"name": "Vase", "date": 1820.0, "findspot": {"lat": 51.5, "lon": -0.12}}) == \
        "Vase (1820), found at 51.5, -0.12"
    assert template.render({"name": "Vase", "findspot": {"lat": 51.5}}) == "Vase, found at 51.5"
    assert Template.parse("{images.0.label}").render({"images": [{"label": "front"}]}) == "front"
    for text in ("None", "(", ")", " ,", ",,"):
        assert text not in template.render({"name": "Vase", "date": None, "findspot": None})


def test_unknown_field_names_template_and_field():
    with pytest.raises(InputError) as err:
        CaptionBuilder(["{title}", "{title} from {perod}"], [{"title": "x", "period": "Roman"}])
    assert "{title} from {perod}" in str(err.value) and "'perod'" in str(err.value)
    with pytest.raises(InputError):
        Template.parse("no fields here")


def test_several_templates_drawn_per_sample_and_seeded():
    records = [{"title": f"t{i}", "kind": "pot"} for i in range(50)]
    builder = CaptionBuilder(["{title}", "a {kind}: {title}"], records)
    draw = builder.draw(range(50), np.random.default_rng(1))
    assert draw == builder.draw(range(50), np.random.default_rng(1))
    assert {c.startswith("a pot") for c in draw} == {True, False}
    assert builder.first(3) == "t3"


def test_default_caption_skips_ids_urls_hashes_numbers():
    record = {"id": "A-1", "title": "Amphora", "url": "https://x/y.jpg", "period": "Roman",
              "keywords": ["wine", "trade"], "width": 640, "sha256": "ab" * 32, "image_path": "i/1.jpg",
              "accession_number": "1999.12.3", "notes": "https://elsewhere"}
    caption = default_caption(record)
    assert caption == "Amphora, Roman, wine, trade"
    builder = CaptionBuilder([], [record])
    assert builder.first(0) == caption


def test_truncation_report_counts_long_captions(openai_vocab):
    from mlx_clip.models.tokenizer import CLIPTokenizer
    tokenizer = CLIPTokenizer.from_folder(openai_vocab)
    builder = CaptionBuilder(["{title}"], [{"title": "short"}, {"title": "word " * 100}])
    report = builder.report(tokenizer.count_tokens)
    assert (report.captions, report.truncated) == (2, 1)
    assert "1 longer than 77 tokens" in report.line(77)


def test_split_is_deterministic_and_stratified():
    items = [Item(f"r{i}", None, {"site": "A" if i % 4 else "B"}) for i in range(100)]
    parts = split(items, 0.2, seed=0, stratify="site")
    train, val = parts.train, parts.val
    redone = split(list(reversed(items)), 0.2, seed=0, stratify="site")
    again = (redone.train, redone.val)
    assert sorted(i.record_id for i in val) == sorted(i.record_id for i in again[1])
    assert len(val) == 20 and sum(i.record["site"] == "B" for i in val) == 5
    assert not {i.record_id for i in train} & {i.record_id for i in val}


def test_default_caption_skips_code_like_values():
    """Catalogue codes (inventory numbers, hex code points) are not words a caption needs."""
    from mlx_clip.data.captions import default_caption

    caption = default_caption({"name": "thumbs up sign", "category": "People & Body", "unicode": "1F44D",
                               "inv": "BM-1897,0401.1234", "findspot": "Ostia"})
    assert caption == "thumbs up sign, People & Body, Ostia"


def test_template_reads_a_literal_dotted_csv_column():
    """A CSV column named "findspot.lat" is read as fetch.py reads it, not as a nested path."""
    builder = CaptionBuilder(["{title} found at {findspot.lat}"], [{"title": "coin", "findspot.lat": "51.5"}])
    assert builder.first(0) == "coin found at 51.5"
