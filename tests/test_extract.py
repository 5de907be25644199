"""pipeline.extractors on small hand-written pages (all text fictional), fully offline."""

from __future__ import annotations

import gzip
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline import extractors as extract
from pipeline.extractors import (
    ExtractionError,
    decode_html,
    extract_html,
    extract_path,
    looks_paywalled,
)
from pipeline.models import ExtractedArticle

FIXTURES = Path(__file__).parent / "fixtures" / "extraction"
ARTICLE = (FIXTURES / "article.html").read_text(encoding="utf-8")
BODY_SENTENCES = [
    "The harbour council of Port Verrin voted on Tuesday evening",
    "Councillor Idris Fenwick, who proposed the scheme",
    "the motion passed by seven votes to four",
    "fitted with reading lamps powered by a small array of solar panels",
]
BOILERPLATE = [
    "biscuit preferences",  # cookie notice
    "Puzzle Corner",  # navigation
    "Lighthouse keeper retires",  # related links
    "All rights reserved",  # footer
    "Privacy policy",
]
PARAGRAPHS = [
    "Snow closed the mountain pass above Kellendorf for the third time this winter, leaving "
    "forty lorries queued on the valley road while ploughs worked through the night.",
    "The regional roads office said the pass would reopen once avalanche wardens had checked "
    "the slopes above the tunnel mouth, probably by Thursday afternoon.",
    "Hauliers asked for a heated waiting area at the foot of the pass, and the mayor promised "
    "to raise the request at the next meeting of the district assembly.",
]


def page(body: str = "", head: str = "", lang: str | None = "en") -> str:
    """A minimal page around ``body`` (default: three fictional paragraphs)."""
    body = body or "<article>" + "".join(f"<p>{p}</p>" for p in PARAGRAPHS) + "</article>"
    lang_attr = f' lang="{lang}"' if lang else ""
    return f"<!DOCTYPE html><html{lang_attr}><head>{head}</head><body>{body}</body></html>"


# ----------------------------------------------------------------------------- body text


@pytest.mark.parametrize("engine", ["trafilatura", "newspaper"])
def test_body_kept_boilerplate_removed(engine: str) -> None:
    article = extract_html(ARTICLE, "https://gazette.example/2024/03/library", engine=engine)
    assert isinstance(article, ExtractedArticle)
    assert article.engine == engine
    for sentence in BODY_SENTENCES:
        assert sentence in article.text
    for junk in BOILERPLATE:
        assert junk not in article.text
    paragraphs = article.text.split("\n\n")
    assert len(paragraphs) == 4  # one per <p>; the repeated headline is not body text
    assert paragraphs[0].startswith("The harbour council")
    assert all(p == p.strip() and "\n" not in p for p in paragraphs)


def test_metadata_from_markup() -> None:
    article = extract_html(ARTICLE.encode("utf-8"), "https://gazette.example/2024/03/library")
    assert article.title == "Harbour council approves floating library"  # og:title, no suffix
    assert article.authors == ["Mara Quill"]
    assert article.published_at == datetime(2024, 3, 5, 9, 30, tzinfo=UTC)  # +01:00 -> UTC
    assert article.published_at.tzinfo is UTC
    assert article.language == "en"  # from lang="en-GB"


def test_title_from_title_tag_without_site_suffix() -> None:
    html = page(head="<title>Snow shuts Kellendorf pass again - Alpine Courier</title>")
    assert extract_html(html, "https://www.alpinecourier.example/snow").title == (
        "Snow shuts Kellendorf pass again")


def test_title_prefers_headline_over_logo_h1() -> None:
    body = ('<header><h1>Courier</h1></header><article>'
            + "".join(f"<p>{p}</p>" for p in PARAGRAPHS) + "</article>")
    html = page(body, head="<title>Snow shuts Kellendorf pass again | Courier</title>")
    assert extract_html(html, known_site_names=("Courier",)).title == (
        "Snow shuts Kellendorf pass again")


TAIWAN_HEADLINE = "Could a Trump-Vance win reshape America's relationship with China – and Taiwan?"


@pytest.mark.parametrize(("title", "site_name", "url", "known", "expected"), [
    # a real headline's last segment is kept, whatever its length
    (TAIWAN_HEADLINE, "South China Morning Post", "https://www.scmp.com/news/x", (),
     TAIWAN_HEADLINE),
    (TAIWAN_HEADLINE, None, "https://www.scmp.com/news/x", ("SCMP",), TAIWAN_HEADLINE),
    (TAIWAN_HEADLINE, None, None, (), TAIWAN_HEADLINE),
    ("Dam fails after storms - in pictures", None, "https://gazette.example/a", (),
     "Dam fails after storms - in pictures"),
    # a segment that names the site goes: og:site_name, the feed's title, or the host
    ("Dam fails after storms | Daily Planet", "Daily Planet", None, (), "Dam fails after storms"),
    ("Dam fails after storms - BBC News", None, "https://www.bbc.co.uk/news/1", (),
     "Dam fails after storms"),
    ("Dam fails after storms | Reuters", None, "https://example.org/x",
     ("Reuters: World News",), "Dam fails after storms"),
    ("The Guardian | Dam fails after storms", None, "https://www.theguardian.com/x", (),
     "Dam fails after storms"),
])
def test_site_suffix_is_cut_only_when_it_names_the_site(title, site_name, url, known, expected):
    meta = f'<meta property="og:site_name" content="{site_name}">' if site_name else ""
    html = page(head=f'<meta property="og:title" content="{title}">{meta}')
    assert extract_html(html, url, known_site_names=known).title == expected


def test_title_prefers_full_h1_over_truncated_title() -> None:
    body = ("<article><h1>Snow shuts Kellendorf pass again as lorries queue</h1>"
            + "".join(f"<p>{p}</p>" for p in PARAGRAPHS) + "</article>")
    html = page(body, head="<title>Snow shuts Kellendorf pass again as lorries queue | AC</title>")
    article = extract_html(html)
    assert article.title == "Snow shuts Kellendorf pass again as lorries queue"
    assert not article.text.startswith("Snow shuts")


@pytest.mark.parametrize(("head", "expected"), [
    ('<script type="application/ld+json">{"@graph": [{"@type": "WebPage"}, '
     '{"@type": "NewsArticle", "datePublished": "2023-11-02T08:15:00Z"}]}</script>',
     datetime(2023, 11, 2, 8, 15, tzinfo=UTC)),
    ('<meta itemprop="datePublished" content="2023-11-02 08:15:00">',  # naive: taken as UTC
     datetime(2023, 11, 2, 8, 15, tzinfo=UTC)),
    ('<meta name="pubdate" content="Thu, 02 Nov 2023 09:15:00 +0100">',
     datetime(2023, 11, 2, 8, 15, tzinfo=UTC)),
    ('<meta property="article:published_time" content="0001-01-01T00:00:00Z">', None),
])
def test_published_at_sources(head: str, expected: datetime | None) -> None:
    article = extract_html(page(head=head))
    if expected is None:
        assert article.published_at is None or article.published_at.year > 1990
    else:
        assert article.published_at == expected


@pytest.mark.parametrize(("lang", "head", "expected"), [
    ("pt-BR", "", "pt"),
    ("EN", "", "en"),
    (None, '<meta property="og:locale" content="de_DE">', "de"),
    (None, '<meta http-equiv="content-language" content="fr">', "fr"),
    (None, "", None),
    ("x-klingon", "", None),
])
def test_language(lang: str | None, head: str, expected: str | None) -> None:
    assert extract_html(page(head=head, lang=lang)).language == expected


# ----------------------------------------------------------------------------- input


def test_extract_path_plain_and_gz(tmp_path: Path) -> None:
    plain = tmp_path / "a.html"
    plain.write_text(ARTICLE, encoding="utf-8")
    packed = tmp_path / "a.html.gz"
    packed.write_bytes(gzip.compress(ARTICLE.encode("utf-8")))
    from_plain, from_gz = extract_path(plain), extract_path(packed)
    assert from_gz == from_plain
    assert BODY_SENTENCES[0] in from_gz.text


def test_extract_path_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError):
        extract_path(tmp_path / "missing.html")
    broken = tmp_path / "broken.html.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 this is not gzip")
    with pytest.raises(ExtractionError):
        extract_path(broken)


@pytest.mark.parametrize(("charset", "declaration"), [
    ("windows-1251", '<meta charset="windows-1251">'),
    ("koi8-r", '<meta http-equiv="Content-Type" content="text/html; charset=KOI8-R">'),
])
def test_legacy_charset_declared_in_meta(charset: str, declaration: str) -> None:
    sentences = ["Паром из Верхнего Залива отменили из-за шторма, и пассажиры ждали на "
                 "пристани до самого вечера, пока капитан не объявил новое расписание.",
                 "Городской совет обещал построить крытый зал ожидания к следующей осени, "
                 "когда начнётся ремонт старого причала у маяка."] * 2
    html = page("<article>" + "".join(f"<p>{s}</p>" for s in sentences) + "</article>",
                head=declaration, lang="ru").encode(charset)
    article = extract_html(html)
    assert "Паром из Верхнего Залива отменили" in article.text
    assert "ремонт старого причала у маяка" in article.text


def test_latin1_label_and_mislabelled_utf8() -> None:
    latin = '<html><head><meta charset="iso-8859-1"></head><body><p>Café crème – déjà vu</p>'
    assert "Café crème – déjà vu" in decode_html(latin.encode("cp1252"))  # label means cp1252
    mislabelled = latin.encode("utf-8")  # says latin-1, is UTF-8: read as UTF-8
    assert "Café crème – déjà vu" in decode_html(mislabelled)
    xml = '<?xml version="1.0" encoding="ISO-8859-15"?><html><body><p>Prix : 5 €</p>'
    assert "5 €" in decode_html(xml.encode("iso-8859-15"))
    assert decode_html("\ufeff<p>Zoë</p>".encode("utf-16-le")) == "<p>Zoë</p>"


def test_xml_declaration_in_str_input() -> None:
    html = '<?xml version="1.0" encoding="utf-8"?>\n' + page()
    assert PARAGRAPHS[0] in extract_html(html).text


@pytest.mark.parametrize("garbage", [
    b"", "", "   \n ", "<html></html>", "<html><body><script>var x = 1;</script></body></html>",
    "<<<>>><!--", b"\xff\xfe\xfd not really <html", "<p>Hi</p>",
])
def test_empty_or_garbage_gives_empty_text(garbage: bytes | str) -> None:
    article = extract_html(garbage)
    assert isinstance(article, ExtractedArticle)
    assert len(article.text) < 50
    assert article.engine in extract.ENGINES


def test_not_a_page_raises() -> None:
    with pytest.raises(ExtractionError):
        extract_html(b"%PDF-1.4\x00\x00\x01binary")
    with pytest.raises(ExtractionError):
        extract_html(12345)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="engine"):
        extract_html(ARTICLE, engine="goose")


# ----------------------------------------------------------------------------- paywall


@pytest.mark.parametrize(("head", "body", "expected"), [
    ('<script type="application/ld+json">{"@type": "NewsArticle", '
     '"isAccessibleForFree": false}</script>', "", True),
    ('<script type="application/ld+json">{"isAccessibleForFree": "False"}</script>', "", True),
    ('<meta itemprop="isAccessibleForFree" content="false">', "", True),
    ('<meta property="article:content_tier" content="locked">', "", True),
    ("", "<p>Lead paragraph.</p><div>Subscribe to continue reading.</div>", True),
    ("", "<p>This article is only available to subscribers.</p>", True),
    # free, or metered (the meter needs cookies we never send): not a paywall
    ('<script type="application/ld+json">{"isAccessibleForFree": true}</script>', "", False),
    ('<meta property="article:content_tier" content="metered">'
     '<script type="application/ld+json">{"isAccessibleForFree": false}</script>', "", False),
    ('<meta property="article:content_tier" content="free">', "", False),
    ("", "<p>Subscribe to our newsletter for weekly harbour news.</p>", False),
    ('<script src="https://cdn.example/paywall.js"></script>', "", False),
])
def test_looks_paywalled(head: str, body: str, expected: bool) -> None:
    html = page(body, head=head)
    assert looks_paywalled(html) is expected
    assert looks_paywalled(html.encode("utf-8")) is expected


def test_fixture_article_is_not_paywalled() -> None:
    assert looks_paywalled(ARTICLE) is False


# ----------------------------------------------------------------------------- engines


def test_falls_back_to_newspaper_when_trafilatura_returns_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract, "_run_trafilatura",
                        lambda text, url, options: extract._EngineOutput())
    article = extract_html(ARTICLE, "https://gazette.example/2024/03/library")
    assert article.engine == "newspaper"
    assert BODY_SENTENCES[1] in article.text
    assert article.title == "Harbour council approves floating library"

    no_fallback = extract_html(ARTICLE, fallback=False)
    assert no_fallback.text == ""
    assert no_fallback.engine == "trafilatura"
    assert no_fallback.title == "Harbour council approves floating library"  # markup still read


def test_falls_back_when_engine_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(text: str, url: str | None) -> extract._EngineOutput:
        raise ImportError("nltk is required for Korean text processing")

    monkeypatch.setattr(extract, "_run_newspaper", broken)
    article = extract_html(ARTICLE, engine="newspaper")
    assert article.engine == "trafilatura"
    assert BODY_SENTENCES[2] in article.text


def test_short_text_tries_other_engine_and_keeps_longer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract, "_run_trafilatura",
                        lambda text, url, options: extract._EngineOutput(text="Share this"))
    article = extract_html(ARTICLE)
    assert article.engine == "newspaper"
    assert BODY_SENTENCES[3] in article.text
    assert extract_html(ARTICLE, min_text_chars=5).engine == "trafilatura"


def test_korean_page_without_nltk_still_extracts() -> None:
    sentences = ["항구 도시의 시의회는 화요일 저녁 오래된 곡물 운반선을 떠다니는 도서관으로 "
                 "바꾸는 계획을 승인했다.", "첫 운항은 선창을 말리고 책장을 설치한 뒤 유월 초에 "
                 "시작될 예정이라고 시청 관계자가 밝혔다."] * 3
    html = page("<article>" + "".join(f"<p>{s}</p>" for s in sentences) + "</article>",
                head="<title>떠다니는 도서관 승인</title>", lang="ko")
    for engine in extract.ENGINES:
        article = extract_html(html, "https://news.example.kr/1", engine=engine)
        assert "곡물 운반선을 떠다니는 도서관으로" in article.text
        assert article.language == "ko"


@pytest.mark.parametrize("engine", ["newspaper", "trafilatura"])
def test_no_network_attempted(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access attempted during extraction")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    html = ARTICLE.replace(
        "<head>", '<head><meta http-equiv="refresh" content="0; url=http://example.com/next">')
    article = extract_html(html, "http://example.com/story", engine=engine, fallback=False)
    assert attempts == []
    assert article.engine == engine
    assert BODY_SENTENCES[0] in article.text
