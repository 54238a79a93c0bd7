"""The caption check before training: shared captions by distinct image, token lengths, cut
captions, and the near-identical warning."""

from mlx_clip.data.caption_check import check_captions, near_identical_share
from mlx_clip.data.captions import CaptionBuilder


def _words(texts):
    return [len(t.split()) + 2 for t in texts]  # a stand-in tokenizer: one token a word, plus start and end


def test_shared_captions_count_distinct_images_and_tokens():
    records = [{"t": "a coin"}, {"t": "a coin"}, {"t": "a coin"}, {"t": "a bronze brooch with a long pin"},
               {"t": "a coin"}, {"t": "a pot"}]
    images = ["i0", "i1", "i2", "i3", "i0", "i5"]  # record 4 is a second record of image i0
    check = check_captions(CaptionBuilder(["{t}"], records), images, _words, context_length=6)
    assert (check.records, check.images, check.distinct_captions) == (6, 5, 3)
    assert check.images_sharing_a_caption == 3  # i0, i1, i2 share "a coin"; i0's second record is not another image
    assert check.top_repeated == [{"caption": "a coin", "images": 3}]
    assert (check.median_tokens, check.longest_tokens, check.cut_captions) == (4, 9, 1)
    assert check.near_identical_share == 4 / 6 and "67% of the records' captions" in check.warning  # the 4 coins
    lines = check.lines()
    assert "3 images share an identical caption" in lines[0] and "1 cut at 6 tokens" in lines[0]
    assert lines[1] == "  3 images: 'a coin'"


def test_near_identical_captions_warn():
    prefix = "Fragment of a terra sigillata bowl, Dragendorff form 37, "
    records = [{"t": prefix + f"inventory {k}"} for k in range(8)] + [{"t": "a coin"}, {"t": "a pot"}]
    images = [f"i{k}" for k in range(10)]
    check = check_captions(CaptionBuilder(["{t}"], records), images, _words, context_length=77)
    assert check.images_sharing_a_caption == 0  # no two are identical ...
    assert check.near_identical_share == 0.8 and "80% of the records' captions" in check.warning  # ... yet alike
    assert near_identical_share([prefix + "a", prefix + "b"], ["one", "one"]) == 0  # one image's two records
    distinct = check_captions(CaptionBuilder(["{t}"], records[6:]), images[6:], _words, context_length=77)
    assert distinct.near_identical_share == 0.5 and distinct.warning is None  # half: not most


def test_a_template_field_some_records_lack_is_counted_and_said():
    """The findspot a quarter of the finds lack: said per field, so a run's captions are known to
    name it for only some records (their captions leave it out, without debris)."""
    records = [{"type": "coin", "findspot": {"name": "Knossos"}}, {"type": "lamp", "findspot": {"name": ""}},
               {"type": "sherd"}, {"type": "pin", "findspot": {"name": "Delphi"}}]
    builder = CaptionBuilder(["{type}, found at {findspot.name}"], records)
    check = check_captions(builder, ["a", "b", "c", "d"], _words, context_length=77)
    assert check.field_gaps == {"type": 0, "findspot.name": 2} and builder.options[2] == ["sherd"]
    assert "caption field 'findspot.name': no text in 2 of 4 records (their captions leave it out)" in check.lines()
    assert not any("'type'" in line for line in check.lines())  # a field every record fills says nothing
