"""Article identity from canonical URLs."""

from __future__ import annotations

import pytest

from pipeline.urls import article_id_for, canonical_url, content_hash


@pytest.mark.parametrize(("url", "expected"), [
    ("HTTPS://Example.COM/a/b?utm_source=rss&utm_medium=feed#top", "https://example.com/a/b"),
    ("https://example.com:443/a?b=2&a=1&fbclid=x&gclid=y", "https://example.com/a?a=1&b=2"),
    ("http://example.com:8080//a//b", "http://example.com:8080/a/b"),
    ("https://example.com", "https://example.com/"),
    ("https://example.com/p?id=5&mc_cid=1&_ga=2", "https://example.com/p?id=5"),
])
def test_canonical_url(url, expected):
    assert canonical_url(url) == expected


def test_article_id_is_stable_across_tracking_variants():
    a = article_id_for("https://news.example/story?utm_campaign=x#comments")
    b = article_id_for("https://NEWS.example/story")
    assert a == b
    assert a != article_id_for("https://news.example/other")


def test_guid_fallback_and_missing_identity():
    assert article_id_for(None, "tag:example,2023:1") == article_id_for(None, "tag:example,2023:1")
    with pytest.raises(ValueError):
        article_id_for(None, None)


def test_content_hash_ignores_whitespace_but_not_words():
    assert content_hash("T", "a  b\n\nc") == content_hash("T", "a b c")
    assert content_hash("T", "a b c") != content_hash("T", "a b d")
