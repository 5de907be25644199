"""Feed bytes -> ParsedFeed: formats, plain text, dates, links, and what counts as unusable."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipeline.feedparse import FeedParseError, html_to_text, parse_feed, plain_to_text

FEED_URL = "https://news.example.com/feeds/world.xml"
XML = {"content-type": "application/rss+xml; charset=utf-8"}

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"
     xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel>
  <title>World &amp; More</title>
  <link>https://news.example.com/</link>
  <language>en-GB</language>
  <ttl>30</ttl>
  <item>
    <title>Storm &lt;b&gt;hits&lt;/b&gt; coast</title>
    <link>/2025/01/storm?utm_source=rss</link>
    <guid isPermaLink="false">storm-123</guid>
    <description>&lt;p&gt;Winds of &lt;b&gt;100&amp;nbsp;km/h&lt;/b&gt;.&lt;/p&gt;&lt;p&gt;Second
      para&lt;br/&gt;with a break.&lt;/p&gt;&lt;script&gt;alert(1)&lt;/script&gt;</description>
    <content:encoded><![CDATA[<div><p>Full text.</p><style>p{}</style>
      <p>More &eacute;l&egrave;ve.</p></div>]]></content:encoded>
    <pubDate>Wed, 01 Jan 2025 10:00:00 +0200</pubDate>
    <dc:creator>Ann Writer</dc:creator>
  </item>
  <item>
    <title>No link here</title>
    <guid isPermaLink="true">https://news.example.com/2025/01/permalink</guid>
  </item>
</channel>
</rss>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="de">
  <title type="html">Atom &lt;i&gt;News&lt;/i&gt;</title>
  <entry>
    <title>Eins</title>
    <id>tag:example.com,2025:1</id>
    <link rel="alternate" href="https://example.com/eins"/>
    <updated>2025-02-03T04:05:06Z</updated>
    <published>2025-02-01T00:00:00-05:00</published>
    <author><name>Bea</name></author>
    <author><name>Carl</name></author>
    <summary type="text">Plain &lt;not a tag&gt; summary</summary>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">
      <p>Hallo <b>Welt</b></p></div></content>
  </entry>
</feed>"""


def test_rss_maps_to_plain_text_entries():
    parsed = parse_feed(RSS, FEED_URL, XML)
    assert parsed.title == "World & More"
    assert parsed.ttl_s == 30 * 60
    assert parsed.bozo_reason is None
    first, second = parsed.entries
    assert first.link == "https://news.example.com/2025/01/storm?utm_source=rss"
    assert first.guid == "storm-123"
    assert first.title == "Storm hits coast"
    assert first.summary == "Winds of 100 km/h.\n\nSecond para\nwith a break."  # nbsp too
    assert first.content == "Full text.\n\nMore \u00e9l\u00e8ve."
    assert first.published_at == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    assert first.authors == ["Ann Writer"]
    assert first.language == "en-gb"
    assert second.link == "https://news.example.com/2025/01/permalink"  # guid isPermaLink
    assert second.summary == "" and second.content == "" and second.published_at is None


def test_atom_maps_dates_authors_language_and_xhtml():
    parsed = parse_feed(ATOM, "https://example.com/atom", {"content-type": "application/atom+xml"})
    assert parsed.title == "Atom News"
    assert parsed.ttl_s is None
    entry = parsed.entries[0]
    assert entry.guid == "tag:example.com,2025:1"
    assert entry.link == "https://example.com/eins"
    assert entry.updated_at == datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert entry.published_at == datetime(2025, 2, 1, 5, 0, tzinfo=UTC)
    assert entry.published_at.tzinfo is not None
    assert entry.authors == ["Bea", "Carl"]
    assert entry.language == "de"
    assert entry.summary == "Plain <not a tag> summary"
    assert entry.content == "Hallo Welt"


def test_rdf_rss1_is_read():
    rdf = b"""<?xml version="1.0"?>
    <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
             xmlns="http://purl.org/rss/1.0/">
      <channel rdf:about="https://example.org/"><title>RDF site</title></channel>
      <item rdf:about="https://example.org/a"><title>A</title><link>https://example.org/a</link>
      </item>
    </rdf:RDF>"""
    parsed = parse_feed(rdf, "https://example.org/index.rdf", {})
    assert parsed.title == "RDF site"
    assert [e.link for e in parsed.entries] == ["https://example.org/a"]


def test_json_feed_is_read():
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "JSON &amp; Co",
        "language": "fr",
        "authors": [{"name": "Desk"}],
        "items": [
            {"id": "1", "url": "/posts/1", "title": "Un", "content_html": "<p>Bonjour</p>",
             "summary": "Court", "date_published": "2025-03-04T05:06:07Z",
             "date_modified": "2025-03-04T07:06:07+02:00"},
            {"id": 2, "external_url": "https://elsewhere.example/x",
             "content_text": "Plain\n\ntext",
             "date_published": "Tue, 04 Mar 2025 05:06:07 GMT", "authors": [{"name": "Zoe"}]},
            "not an item",
        ],
    }
    parsed = parse_feed(json.dumps(doc).encode(), "https://example.fr/feed.json",
                        {"content-type": "application/feed+json"})
    assert parsed.title == "JSON & Co"
    one, two = parsed.entries
    assert (one.guid, one.link, one.title) == ("1", "https://example.fr/posts/1", "Un")
    assert (one.content, one.summary) == ("Bonjour", "Court")
    assert one.published_at == datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert one.updated_at == datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert one.authors == ["Desk"] and one.language == "fr"
    assert (two.guid, two.link, two.content) == ("2", "https://elsewhere.example/x",
                                                 "Plain\n\ntext")
    assert two.published_at == datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert two.authors == ["Zoe"]


@pytest.mark.parametrize("body", [b'{"name": "not a feed"}', b'{"items": 3}', b"{broken json",
                                  b"[" * 100_000])
def test_json_that_is_not_a_json_feed_is_a_parse_error(body):
    with pytest.raises(FeedParseError):
        parse_feed(body, FEED_URL, {"content-type": "application/json"})


def test_html_page_is_not_a_feed():
    page = b"<!doctype html><html><head><title>Home</title></head><body><p>Hi</p></body></html>"
    with pytest.raises(FeedParseError):
        parse_feed(page, FEED_URL, {"content-type": "text/html"})


@pytest.mark.parametrize("body", [b"", b"   \n", b"<rss><channel><title>x</ti", b"\x00\x01\x02",
                                  b"<?xml version='1.0'?><nothing/>"])
def test_unusable_documents_raise(body):
    with pytest.raises(FeedParseError) as error:
        parse_feed(body, FEED_URL, XML)
    assert error.value.reason


def test_bozo_feed_with_entries_is_accepted_with_reason():
    broken = b"""<rss version="2.0"><channel><title>Broken</title>
      <item><title>Fine & dandy</title><link>https://example.com/1</link></item>
      <item><title>Two</title><link>https://example.com/2</link>
    </channel></rss>"""
    parsed = parse_feed(broken, FEED_URL, XML)
    assert parsed.bozo_reason
    assert [e.link for e in parsed.entries] == ["https://example.com/1", "https://example.com/2"]


def test_empty_but_valid_feed_is_fine():
    parsed = parse_feed(b"<rss version='2.0'><channel><title>Quiet</title></channel></rss>",
                        FEED_URL, XML)
    assert parsed.title == "Quiet" and parsed.entries == []


def test_charset_from_headers_is_used():
    body = "<rss version='2.0'><channel><title>Caf\u00e9</title></channel></rss>".encode("latin-1")
    parsed = parse_feed(body, FEED_URL, {"content-type": "text/xml; charset=iso-8859-1"})
    assert parsed.title == "Caf\u00e9"


def test_content_that_names_a_local_file_is_never_opened(tmp_path):
    secret = tmp_path / "secret.xml"
    secret.write_bytes(b"<rss version='2.0'><channel><title>LEAKED</title></channel></rss>")
    with pytest.raises(FeedParseError):
        parse_feed(str(secret).encode(), FEED_URL, XML)


def test_unsafe_links_are_dropped():
    rss = b"""<rss version="2.0"><channel><title>t</title>
      <item><title>a</title><link>javascript:alert(1)</link>
        <guid isPermaLink="false">g1</guid></item>
      <item><title>b</title><link>ftp://example.com/file</link>
        <guid isPermaLink="false">g2</guid></item>
    </channel></rss>"""
    parsed = parse_feed(rss, FEED_URL, XML)
    assert [e.link for e in parsed.entries] == [None, None]
    assert [e.guid for e in parsed.entries] == ["g1", "g2"]


def test_bad_dates_become_none():
    rss = b"""<rss version="2.0"><channel><title>t</title>
      <item><title>a</title><link>https://e.com/a</link><pubDate>yesterday-ish</pubDate></item>
    </channel></rss>"""
    assert parse_feed(rss, FEED_URL, XML).entries[0].published_at is None


def test_invalid_ttl_is_ignored():
    for ttl in (b"abc", b"-5", b"0"):
        rss = b"<rss version='2.0'><channel><title>t</title><ttl>" + ttl + b"</ttl></channel></rss>"
        assert parse_feed(rss, FEED_URL, XML).ttl_s is None


@pytest.mark.parametrize(("markup", "text"), [
    ("", ""),
    ("plain   text\n here", "plain text here"),
    ("Tom &amp; Jerry", "Tom & Jerry"),
    ("a < b > c", "a < b > c"),
    ("<p>One</p><p>Two</p>", "One\n\nTwo"),
    ("line<br>next", "line\nnext"),
    ("para<br><br>graph", "para\n\ngraph"),
    ("<ul><li>a</li><li>b</li></ul>", "a\nb"),
    ("<script>evil()</script><style>x{}</style>kept", "kept"),
    ("<div><div><p> nested </p></div></div>", "nested"),
    ("<h2>Head</h2>body", "Head\n\nbody"),
    ("<p>unclosed <b>bold", "unclosed bold"),
    ("caf&eacute; &#8212; &#x2603;", "caf\u00e9 \u2014 \u2603"),
    ("ctrl\x00\x08chars", "ctrlchars"),
    ("<?xml version='1.0' encoding='utf-8'?><p>x</p>", "x"),
])
def test_html_to_text(markup, text):
    assert html_to_text(markup) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("a\n\n\nb", "a\n\nb"),
    ("one\ntwo", "one\ntwo"),
    ("  spaced   out \r\n\r\n next ", "spaced out\n\nnext"),
    ("x < y & z", "x < y & z"),
])
def test_plain_to_text(text, expected):
    assert plain_to_text(text) == expected


# ---- the streaming fast path for very large feeds (pipeline/feedfast.py) ---------------------

FAST_ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="fr" xml:base="https://atom.example/">
  <title type="html">Le &lt;b&gt;Journal&lt;/b&gt;</title>
  <entry xml:base="/section/">
    <title type="text">R&#233;forme &lt;adopt&#233;e&gt;</title>
    <link rel="alternate" href="item-1"/>
    <link rel="enclosure" href="https://cdn.atom.example/a.mp3"/>
    <id>urn:uuid:0b1e</id>
    <published>2025-02-01T08:00:00Z</published>
    <updated>2025-02-02T09:30:00+01:00</updated>
    <author><name>Claire Auteur</name><email>claire@atom.example</email></author>
    <summary type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Un
      <b>r&#233;sum&#233;</b>.</p></div></summary>
    <content type="html">&lt;p&gt;Le texte complet.&lt;/p&gt;</content>
  </entry>
  <entry>
    <title>Sans lien</title>
    <id>https://atom.example/permalink/2</id>
    <updated>2025-02-03T00:00:00Z</updated>
  </entry>
</feed>"""

FAST_RSS_EXTRAS = b"""<?xml version="1.0"?>
<rss version="2.0" xmlns:a10="http://www.w3.org/2005/Atom"
     xmlns:dc="http://purl.org/dc/elements/1.1/" xml:base="https://rss.example/news/">
<channel><title>Extras</title><language>de</language>
  <item><title>Relative guid</title><guid>item-7</guid>
    <author>The Desk</author><dc:date>2025-03-01T10:00:00Z</dc:date></item>
  <item><a10:link href="https://rss.example/a/8"/><dc:title>Atom link inside RSS</dc:title>
    <a10:author><a10:name>Rolf</a10:name></a10:author>
    <a10:updated>2025-03-02T10:00:00Z</a10:updated></item>
  <item><title>Not a permalink</title><guid isPermalink="false">id-9</guid>
    <link>relative/9</link></item>
</channel></rss>"""


@pytest.mark.parametrize("body", [RSS, FAST_ATOM, FAST_RSS_EXTRAS],
                         ids=["rss", "atom", "rss-extras"])
def test_fast_path_reads_what_feedparser_reads(body):
    slow = parse_feed(body, FEED_URL, XML, fast_min_bytes=None)
    fast = parse_feed(body, FEED_URL, XML, fast_min_bytes=0)
    assert fast.title == slow.title and fast.ttl_s == slow.ttl_s
    assert fast.entries == slow.entries
    assert len(fast.entries) >= 2 and fast.bozo_reason is None


def test_fast_path_fields_of_an_atom_entry():
    first, second = parse_feed(FAST_ATOM, FEED_URL, XML, fast_min_bytes=0).entries
    assert first.link == "https://atom.example/section/item-1"
    assert first.title == "Réforme <adoptée>" and first.summary == "Un résumé."
    assert first.content == "Le texte complet." and first.authors == ["Claire Auteur"]
    assert first.published_at == datetime(2025, 2, 1, 8, tzinfo=UTC)
    assert first.updated_at == datetime(2025, 2, 2, 8, 30, tzinfo=UTC)
    assert first.language == "fr" and first.guid == "urn:uuid:0b1e"
    assert second.link == "https://atom.example/permalink/2"  # the id stands in for a link
    assert second.published_at is None


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY e "x">]><rss version="2.0"><channel>'
    b"<item><title>&e;</title><link>https://a.example/1</link></item></channel></rss>",
    b'<?xml version="1.0"?><!--' + b"x" * 5000 + b'--><!DOCTYPE rss [<!ENTITY e "x">]>'
    b'<rss version="2.0"><channel><item><title>&e;</title><link>https://a.example/4</link>'
    b"</item></channel></rss>",
    b'<rss version="2.0"><channel><item><title>Unclosed</title></channel></rss>',
    b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
    b'xmlns="http://purl.org/rss/1.0/"><item><title>RSS 1.0</title>'
    b"<link>https://a.example/2</link></item></rdf:RDF>",
    b'<rss version="0.91"><channel><item><title>Old</title>'
    b"<link>https://a.example/3</link></item></channel></rss>",
], ids=["dtd", "dtd-after-a-long-comment", "ill-formed", "rss1", "rss091"])
def test_fast_path_declines_what_only_feedparser_should_read(body):
    from pipeline.feedfast import parse_large_feed

    assert parse_large_feed(body, FEED_URL) is None
    assert parse_feed(body, FEED_URL, XML, fast_min_bytes=0).entries  # feedparser reads it


def test_fast_path_is_used_from_the_configured_size_on(monkeypatch):
    import pipeline.feedfast
    import pipeline.feedparse

    calls = []
    real = pipeline.feedfast.parse_large_feed
    monkeypatch.setattr(pipeline.feedparse, "parse_large_feed",
                        lambda body, url: calls.append(len(body)) or real(body, url))
    parse_feed(RSS, FEED_URL, XML, fast_min_bytes=len(RSS) + 1)
    parse_feed(RSS, FEED_URL, XML, fast_min_bytes=None)
    assert calls == []
    parse_feed(RSS, FEED_URL, XML, fast_min_bytes=len(RSS))
    assert calls == [len(RSS)]


@pytest.mark.parametrize(("title", "kept"), [
    ("More »", False), ("Read more…", False), ("Continue reading →", False), (" » ", False),
    ("More rain for the coast", True), ("Correction", True), ("Pepper...and Salt", True),
    ("台灣", True),
])
def test_link_text_is_not_a_headline(title, kept):
    body = ('<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><item>'
            f"<title>{title}</title><link>https://example.com/a</link>"
            "<description>First sentence. Second.</description></item></channel></rss>")
    [entry] = parse_feed(body.encode(), FEED_URL, XML).entries
    assert entry.title == (title.strip() if kept else "")
