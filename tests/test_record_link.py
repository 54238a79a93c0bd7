"""One owner for a record's link (index.py stores it, the search page's --link-template overrides it)."""

from __future__ import annotations

import pytest

from mlx_clip.errors import InputError
from mlx_clip.use.record_link import check_link_template, record_link


def test_a_link_is_filled_quoted_and_reaches_dotted_fields():
    record = {"uuid": "ab 12/x", "media": [{"id": "m?1"}], "period": "Roman"}
    assert record_link("https://opencontext.org/media/{uuid}", record) == "https://opencontext.org/media/ab%2012/x"
    assert record_link("https://example.org/{media.0.id}?p={period}", record) == "https://example.org/m%3F1?p=Roman"


def test_a_record_without_the_field_has_no_link_and_never_stops_the_index():
    assert record_link("https://example.org/{uuid}", {"uuid": ""}) is None
    assert record_link("https://example.org/{uuid}", {"title": "no id"}) is None


@pytest.mark.parametrize("template, words", [("https://x/{uuid", "unbalanced"), ("https://x/}{", "unbalanced"),
                                             ("https://x/static", "names no field"),
                                             ("javascript:alert({uuid})", "http:// or https://")])
def test_a_template_that_cannot_make_a_link_is_one_line(template, words):
    with pytest.raises(InputError, match=words):
        check_link_template(template)
