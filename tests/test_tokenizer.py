"""Token ids equal transformers' CLIPTokenizer on OpenAI's real vocabulary."""

import numpy as np
import pytest
from transformers import CLIPTokenizer as HFTokenizer

from mlx_clip.models.tokenizer import CLIPTokenizer

CAPTIONS = [
    "", " ", "a photo of a cat", "A PHOTO OF A CAT", "a  photo\tof\na   cat  ",
    "amphora", "Amphora from the Late Bronze Age", "Terracotta lekythos, Attic, c. 450 BC",
    "found at 51.5074, -0.1278", "findspot: 37.9715° N, 23.7257° E", "-0.000001", "3.14159265358979",
    "1,566 of 72,363 records", "100%", "#42", "ID: BM-1897,0401.1234", "object_type=coin; period=Roman",
    "café", "Café au lait", "naïve façade", "Ærøskøbing", "São Paulo", "Zürich", "Kraków",
    "Ελληνικά γράμματα", "Русский текст", "日本語のテキスト", "中文字符", "한국어", "עברית", "العربية",
    "emoji 😀 🎉 🏺", "👩‍👩‍👧‍👦 family", "🇬🇧 flag", "❤️", "thumbs up 👍🏽",
    "&amp; &lt;b&gt; &quot;quoted&quot; &#39;", "AT&T", "<b>bold</b>", "Tom's & Jerry's",
    "it's they're we've I'm you'll he'd", "don't", "ROCK'N'ROLL", "e-mail", "state-of-the-art",
    "C++ / C#", "https://example.org/iiif/2/abc/full/675,/0/default.jpg", "user@example.com",
    "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> in the middle",
    "\u00a0non-breaking\u00a0space", "zero\u200bwidth", "tab\tseparated\tvalues",
    "lorem ipsum " * 60, "🏺" * 100, "supercalifragilisticexpialidocious" * 5,
    "1234567890" * 20, "…ellipsis… – en dash — em dash", "“curly” ‘quotes’",
]


@pytest.fixture(scope="module")
def tokenizers(openai_vocab):
    ours = CLIPTokenizer.from_folder(openai_vocab)
    theirs = HFTokenizer.from_pretrained(openai_vocab)
    return ours, theirs


def test_vocabulary_is_the_real_one(tokenizers):
    ours, theirs = tokenizers
    assert theirs.vocab_size == 49408
    assert ours.bos_token_id == 49406 and ours.eos_token_id == 49407


def test_ids_equal_transformers(tokenizers):
    ours, theirs = tokenizers
    assert len(CAPTIONS) >= 50
    expected = theirs(CAPTIONS, padding="max_length", truncation=True, max_length=77)["input_ids"]
    got = ours(CAPTIONS)
    for caption, exp, row in zip(CAPTIONS, expected, got):
        assert list(row) == exp, caption


def test_long_texts_truncated_with_end_kept(tokenizers):
    ours, _ = tokenizers
    ids = ours(["word " * 500])
    assert ids.shape == (1, 77)
    assert ids[0, 0] == ours.bos_token_id and ids[0, -1] == ours.eos_token_id
    assert ours.count_tokens(["word " * 500]) == [502]
    # count_tokens leaves padding and truncation on
    assert ours(["a"]).shape == (1, 77)


def test_files_from_folder_match(tokenizers, tiny_hf):
    """tokenizer.json (as transformers saves it) gives the same ids as vocab.json + merges.txt."""
    ours, _ = tokenizers
    from_json = CLIPTokenizer.from_folder(tiny_hf)
    np.testing.assert_array_equal(from_json(CAPTIONS), ours(CAPTIONS))
