"""Article text and metadata from an HTML page, fully offline.

trafilatura is the default engine and newspaper4k the fallback (figures and reasons:
docs/decisions.md, "Article extraction"; reproduce with ``benchmarks/extraction.py``). Neither
engine may touch the network here: pages come in as bytes/str, newspaper is configured never to
download (no images, no meta-refresh, no memoization) and its NLP step (nltk punkt) is never run.

Metadata that pages state explicitly (``og:title``, ``article:published_time``, JSON-LD
``datePublished``, ``<html lang>``) wins over what the engines guess, because the engines'
guesses (htmldate's text search, ``<title>`` with its site suffix) are the usual source of errors.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import json
import logging
import re
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lxml.html
from lxml import etree

from pipeline.models import ExtractedArticle

log = logging.getLogger(__name__)

ENGINES = ("trafilatura", "newspaper")
# Chosen on aeb-dev by benchmarks/extraction.py (docs/decisions.md, "Article extraction"):
# favor_precision with tables had the best F1 (recall unchanged, less boilerplate) at the
# same speed.
TRAFILATURA_OPTIONS: Mapping[str, bool] = {
    "favor_precision": True,
    "favor_recall": False,
    "include_tables": True,
}
# Text shorter than this counts as "nothing extracted" and sends us to the other engine
# (same default as ExtractionSettings.min_text_chars).
DEFAULT_MIN_TEXT_CHARS = 200
_PLACEHOLDER_URL = "https://localhost/article"  # newspaper needs some URL to build an Article


class ExtractionError(Exception):
    """The input cannot be read as an HTML page (wrong type, unreadable file, binary data)."""


# --------------------------------------------------------------------------------------------
# Decoding


_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_META_CHARSET = re.compile(
    rb"""<meta[^>]+?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]+encoding\s*=\s*["']([a-zA-Z0-9_.:-]+)""")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
# WHATWG: these labels mean windows-1252 / UTF-8 in practice, whatever the name says.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
    "us-ascii": "cp1252", "ascii": "cp1252", "l1": "cp1252",
    "utf-16": "utf-8", "utf-16le": "utf-8", "utf-16be": "utf-8", "unicode": "utf-8",
    "x-sjis": "shift_jis", "gb2312": "gb18030", "gbk": "gb18030",
}


def _declared_charset(head: bytes) -> str | None:
    match = _XML_ENCODING.match(head) or _META_CHARSET.search(head)
    if not match:
        return None
    label = match.group(1).decode("ascii", "ignore").strip().lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode_html(data: bytes) -> str:
    """Decode page bytes: BOM, then the page's own declaration, then UTF-8, then a guess.

    A page that declares a legacy charset but is valid (non-ASCII) UTF-8 is read as UTF-8:
    mislabelled UTF-8 is common, while legacy text that happens to be valid UTF-8 is rare.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding, errors="replace")
    if b"\x00" in data[:1024]:
        raise ExtractionError("not HTML: binary content")
    declared = _declared_charset(data[:4096])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and (declared in (None, "utf-8") or not text.isascii()):
        return text
    if declared is not None:
        return data.decode(declared, errors="replace")
    from charset_normalizer import from_bytes  # trafilatura's own detector; only when unlabelled

    best = from_bytes(data[:200_000]).best()
    return data.decode(best.encoding if best else "cp1252", errors="replace")


def _as_text(html: bytes | str) -> str:
    if isinstance(html, bytes | bytearray | memoryview):
        text = decode_html(bytes(html))
    elif isinstance(html, str):
        text = html
    else:
        raise ExtractionError(f"expected bytes or str, got {type(html).__name__}")
    # lxml refuses str input with an encoding declaration; it has served its purpose anyway.
    return _XML_DECLARATION.sub("", text, count=1).replace("\x00", "")


def _parse_tree(text: str) -> lxml.html.HtmlElement | None:
    if not text.strip():
        return None
    try:
        return lxml.html.document_fromstring(text)
    except (etree.ParserError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Page metadata stated in markup


@dataclass(slots=True)
class _PageMeta:
    """What the page says about itself in <head> and JSON-LD."""

    meta: dict[str, str] = field(default_factory=dict)  # lower-cased property/name/itemprop
    jsonld: list[Any] = field(default_factory=list)
    html_lang: str | None = None
    page_title: str | None = None
    h1: str | None = None


def _text_of(element: lxml.html.HtmlElement) -> str:
    return " ".join(" ".join(element.itertext()).split())


def _read_meta(tree: lxml.html.HtmlElement | None) -> _PageMeta:
    page = _PageMeta()
    if tree is None:
        return page
    for element in tree.iter("meta"):
        content = element.get("content")
        if content is None:
            continue
        for attr in ("property", "name", "itemprop", "http-equiv"):
            key = (element.get(attr) or "").strip().lower()
            if key and key not in page.meta and content.strip():
                page.meta[key] = content.strip()
    for element in tree.iter("time"):
        if (element.get("itemprop") or "").lower() == "datepublished" and element.get("datetime"):
            page.meta.setdefault("datepublished", element.get("datetime", "").strip())
    for script in tree.xpath('//script[@type="application/ld+json"]'):
        try:
            page.jsonld.append(json.loads(script.text or ""))
        except (ValueError, RecursionError):
            continue
    root_lang = tree.get("lang") or tree.get("{http://www.w3.org/XML/1998/namespace}lang")
    page.html_lang = root_lang
    titles = tree.xpath("//head/title | //title")
    if titles:
        page.page_title = _text_of(titles[0]) or None
    h1s = tree.xpath("//article//h1 | //main//h1") or tree.xpath("//h1")
    if h1s:
        page.h1 = _text_of(h1s[0]) or None
    return page


def _jsonld_values(data: Any, key: str, depth: int = 0) -> Iterator[Any]:
    """Every value of ``key`` in a JSON-LD blob (objects, lists, @graph), outermost first."""
    if depth > 6:
        return
    if isinstance(data, dict):
        if key in data:
            yield data[key]
        for value in data.values():
            if isinstance(value, dict | list):
                yield from _jsonld_values(value, key, depth + 1)
    elif isinstance(data, list):
        for item in data:
            yield from _jsonld_values(item, key, depth + 1)


_LANG_RE = re.compile(r"^[a-z]{2,3}$")


def _normalise_language(value: Any) -> str | None:
    """``en-US`` / ``pt_BR`` / ``EN`` -> ISO 639 primary code; None for anything else."""
    if not isinstance(value, str):
        return None
    primary = re.split(r"[-_\s,;]", value.strip().lower(), maxsplit=1)[0]
    if not _LANG_RE.match(primary) or primary in {"und", "mul", "zxx", "xx"}:
        return None
    return primary


def _language(page: _PageMeta) -> str | None:
    candidates: list[Any] = [page.html_lang]
    candidates += [page.meta.get(k) for k in ("content-language", "language", "og:locale",
                                               "dc.language", "inlanguage")]
    for blob in page.jsonld:
        candidates += list(_jsonld_values(blob, "inLanguage"))
    for candidate in candidates:
        language = _normalise_language(candidate)
        if language:
            return language
    return None


_DATE_META_KEYS = (
    "article:published_time", "og:article:published_time", "datepublished", "published_time",
    "article:published", "parsely-pub-date", "sailthru.date", "pubdate", "publishdate",
    "publish-date", "dc.date.issued", "dcterms.issued", "dcterms.created", "dc.date",
)


def _parse_datetime(value: Any) -> datetime | None:
    """ISO 8601 or RFC 2822 -> aware UTC datetime; naive values are taken as UTC.

    No fuzzy parsing: dateutil fills missing fields from today, which is not deterministic.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            try:
                parsed = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
    else:
        return None
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if parsed.year < 1990 or parsed > datetime.now(UTC) + timedelta(days=2):
        return None  # placeholders (0001-01-01, 1970) and future-dated typos
    return parsed


def _stated_date(page: _PageMeta) -> datetime | None:
    for key in _DATE_META_KEYS:
        parsed = _parse_datetime(page.meta.get(key))
        if parsed:
            return parsed
    for blob in page.jsonld:
        for value in _jsonld_values(blob, "datePublished"):
            parsed = _parse_datetime(value)
            if parsed:
                return parsed
    return None


_TITLE_SEPARATORS = re.compile(r"\s+(?:\||-|–|—|::|·|•|»|/)\s+")
_SEPARATOR_CHARS = " |-–—:·•»/"
# Host labels that name no site ("www.", "edition.", "co.uk"): never a site-name match.
_GENERIC_HOST_LABELS = frozenset({"www", "m", "amp", "mobile", "edition", "news", "co", "com",
                                  "org", "net", "gov", "ac", "int"})


def _squash(text: str) -> str:
    """Lower-case letters and digits only, so a site name, a feed title and a host label
    compare equal ("The Guardian" -> "theguardian")."""
    return "".join(re.findall(r"\w+", text.casefold())).replace("_", "")


def _without_the(name: str) -> str:
    return name[3:] if name.startswith("the") and len(name) > 6 else name


def site_names(url: str | None, *names: str | None) -> frozenset[str]:
    """What a page's site may be called: the given names (``og:site_name``, the feed's
    title, the outlet), their first part ("Reuters: World News" -> "Reuters") and the labels
    of the URL's host ("www.bbc.co.uk" -> "bbc"), each squashed (see ``_squash``) with and
    without a leading "the"."""
    found: set[str] = set()
    for name in names:
        if name and name.strip():
            found.add(_squash(name))
            found.add(_squash(re.split(r"\s*[:|–—-]\s+|\s+[|–—-]\s*", name.strip())[0]))
    if url:
        host = (urlsplit(url).hostname or "").lower()
        labels = host.split(".")[:-1]  # the top-level domain names no site
        found.update(label.replace("-", "") for label in labels
                     if label not in _GENERIC_HOST_LABELS)
    found |= {_without_the(n) for n in found}
    return frozenset(n for n in found if len(n) >= 3)


def _names_site(segment: str, names: frozenset[str]) -> bool:
    """A title segment is the site's name: it is one of ``names`` or starts with one
    ("BBC News" for bbc, "CNN Politics" for cnn), in at most five words."""
    if len(segment.split()) > 5:
        return False
    squashed = {_squash(segment), _without_the(_squash(segment))} - {""}
    return any(form.startswith(name) for form in squashed for name in names)


def _strip_site_suffix(title: str, names: frozenset[str]) -> str:
    """``"Story headline | Daily Planet"`` -> ``"Story headline"``, but only when the cut
    segment names the site (``site_names``): real headlines also contain dashes ("... with
    China – and Taiwan?") and must come through whole."""
    parts = _TITLE_SEPARATORS.split(title)
    if len(parts) < 2 or not names:
        return title
    if _names_site(parts[-1], names):
        return title[: title.rfind(parts[-1])].rstrip(_SEPARATOR_CHARS)
    if _names_site(parts[0], names):
        return title[len(parts[0]):].lstrip(_SEPARATOR_CHARS)
    return title


def _title(page: _PageMeta, engine_title: str | None, url: str | None = None,
           known_names: tuple[str | None, ...] = ()) -> str | None:
    """og:title, else the article's h1 or <title> minus the site name, else the engine's pick.

    When the h1 and <title> disagree the longer wins: an h1 is sometimes the site's logo, and a
    short <title> is often just "Home | Site".
    """
    site_name = page.meta.get("og:site_name") or page.meta.get("application-name")
    names = site_names(url, site_name, *known_names)
    for candidate in (page.meta.get("og:title"), page.meta.get("twitter:title")):
        if candidate:
            cleaned = " ".join(_strip_site_suffix(candidate, names).split())
            if cleaned and (not site_name or cleaned.lower() != site_name.strip().lower()):
                return cleaned
    page_title = page.page_title and " ".join(
        _strip_site_suffix(page.page_title, names).split())
    if page.h1 and page_title:
        h1, cleaned = page.h1.casefold(), page_title.casefold()
        if cleaned in h1 or (h1 in cleaned and len(h1.split()) >= 3):
            return page.h1  # same headline; the <title> may be cut short or carry the site
        return page_title if len(page_title) >= len(page.h1) else page.h1
    if page.h1 or page_title:
        return page.h1 or page_title
    if engine_title and engine_title.strip():
        return " ".join(_strip_site_suffix(engine_title.strip(), names).split())
    return None


def _meta_authors(page: _PageMeta) -> list[str]:
    for key in ("author", "article:author", "parsely-author", "sailthru.author", "dc.creator"):
        value = page.meta.get(key)
        if value and "://" not in value:
            return _clean_authors(re.split(r"\s*[;,|]\s*", value))
    return []


def _clean_authors(names: list[str]) -> list[str]:
    """Trim, drop URLs, dates and duplicates; keep the page's order."""
    seen: list[str] = []
    for name in names:
        name = " ".join(name.split()).strip(" .")
        if (name and len(name) <= 80 and "://" not in name and not re.search(r"\d", name)
                and name not in seen):
            seen.append(name)
    return seen


# --------------------------------------------------------------------------------------------
# Engines


@dataclass(slots=True)
class _EngineOutput:
    text: str = ""
    title: str | None = None
    authors: list[str] = field(default_factory=list)
    published_at: datetime | None = None


def _paragraphs(text: str | None) -> str:
    """One paragraph per non-empty line, separated by a blank line (the pipeline's format)."""
    if not text:
        return ""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n\n".join(line for line in lines if line)


def _drop_headline(text: str, headlines: tuple[str | None, ...]) -> str:
    """Drop a first paragraph that repeats the headline: the title has its own field."""
    first, _, rest = text.partition("\n\n")
    key = first.strip().casefold()
    if rest and any(h and h.strip().casefold() == key for h in headlines):
        return rest
    return text


def _run_trafilatura(text: str, url: str | None, options: Mapping[str, bool]) -> _EngineOutput:
    import trafilatura

    document = trafilatura.bare_extraction(
        text,
        url=url,
        with_metadata=True,
        include_comments=False,
        include_images=False,
        include_links=False,
        include_formatting=False,
        deduplicate=False,  # the dedup cache is process-global: results would depend on history
        favor_precision=bool(options.get("favor_precision", False)),
        favor_recall=bool(options.get("favor_recall", False)),
        include_tables=bool(options.get("include_tables", True)),
        fast=bool(options.get("fast", False)),
    )
    if document is None:
        return _EngineOutput()
    date = _parse_datetime(document.date) if document.date else None
    return _EngineOutput(
        text=_paragraphs(document.text),
        title=document.title,
        authors=_clean_authors(document.author.split(";")) if document.author else [],
        published_at=date,
    )


@functools.cache
def _newspaper() -> Any:
    """Import newspaper once (it is heavy), hiding its "nltk is not installed" warning: we never
    use its NLP. Cached because catch_warnings is not thread-safe and extraction runs in threads.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import newspaper
    return newspaper


def _run_newspaper(text: str, url: str | None) -> _EngineOutput:
    newspaper = _newspaper()
    config = newspaper.Config()
    config.fetch_images = False  # else it downloads images to measure them
    config.memoize_articles = False
    config.follow_meta_refresh = False  # else it fetches the refresh target
    config.disable_category_cache = True
    article = newspaper.Article(url or _PLACEHOLDER_URL, config=config)
    article.download(input_html=text)  # input_html: no request is made
    article.parse()
    return _EngineOutput(
        text=_paragraphs(article.text),
        title=article.title or None,
        authors=_clean_authors(list(article.authors)),
        published_at=_parse_datetime(article.publish_date),
    )


def _run_engine(engine: str, text: str, url: str | None,
                options: Mapping[str, bool]) -> _EngineOutput | None:
    """One engine's output, or None when it raised (logged, never propagated)."""
    try:
        if engine == "trafilatura":
            return _run_trafilatura(text, url, options)
        return _run_newspaper(text, url)
    except ImportError as exc:  # newspaper on ko/ar/... without nltk
        log.debug("%s cannot handle %s: %s", engine, url, exc)
    except Exception as exc:  # an engine bug on one page must not lose the page
        log.info("%s failed on %s: %r", engine, url, exc)
    return None


# --------------------------------------------------------------------------------------------
# Public API


def extract_html(
    html: bytes | str,
    url: str | None = None,
    engine: str = "trafilatura",
    *,
    fallback: bool = True,
    min_text_chars: int = DEFAULT_MIN_TEXT_CHARS,
    trafilatura_options: Mapping[str, bool] | None = None,
    known_site_names: tuple[str | None, ...] = (),
) -> ExtractedArticle:
    """Extract the article's text and metadata from a page.

    ``engine`` runs first; when it fails or yields less than ``min_text_chars`` characters the
    other engine is tried (unless ``fallback=False``) and the longer text wins. ``engine`` in the
    result names the engine whose text is returned. ``known_site_names`` (the feed's title,
    the outlet) help tell a site suffix in the title from the end of a headline. An empty or
    garbage page gives an article with empty text; only input that is not a page at all
    raises ExtractionError.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown extraction engine {engine!r} (expected one of {ENGINES})")
    text = _as_text(html)
    tree = _parse_tree(text)
    page = _read_meta(tree)
    options = TRAFILATURA_OPTIONS if trafilatura_options is None else trafilatura_options

    order = [engine] + ([e for e in ENGINES if e != engine] if fallback else [])
    best: tuple[str, _EngineOutput] | None = None
    if tree is not None:
        for name in order:
            output = _run_engine(name, text, url, options)
            if output is None:
                continue
            if best is None or len(output.text) > len(best[1].text):
                best = (name, output)
            if len(output.text) >= max(min_text_chars, 1):
                break
    used, output = best if best is not None else (engine, _EngineOutput())
    if not output.text:
        used = engine
    title = _title(page, output.title, url, known_site_names)
    return ExtractedArticle(
        title=title,
        text=_drop_headline(output.text, (title, page.h1, output.title)),
        authors=output.authors or _meta_authors(page),
        published_at=_stated_date(page) or output.published_at,
        language=_language(page),
        engine=used,
    )


def extract_path(path: Path, url: str | None = None, engine: str = "trafilatura",
                 **kwargs: Any) -> ExtractedArticle:
    """extract_html on a saved page; ``.gz`` files are decompressed first."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if path.suffix == ".gz" or data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ExtractionError(f"cannot read {path}: {exc}") from exc
    return extract_html(data, url, engine=engine, **kwargs)


_PAYWALL_MARKERS = [
    # schema.org paywall markup (JSON-LD or microdata), as Google asks publishers to add.
    re.compile(r""""isAccessibleForFree"\s*:\s*"?(?:false|no)\b""", re.IGNORECASE),
    re.compile(r"""itemprop=["']isAccessibleForFree["'][^>]*content=["'](?:false|no)["']""",
               re.IGNORECASE),
    re.compile(r"""content=["'](?:false|no)["'][^>]*itemprop=["']isAccessibleForFree["']""",
               re.IGNORECASE),
    # article:content_tier=locked (Facebook/OGP); "metered" is handled as free below.
    re.compile(r"""content_tier["'][^>]*content=["']locked["']""", re.IGNORECASE),
    re.compile(r"""content=["']locked["'][^>]*content_tier["']""", re.IGNORECASE),
    # Server-rendered truncation notices.
    re.compile(r"(?:subscribe|sign up|log in|register)(?: now)? to (?:continue|keep) reading"
               r"|this (?:article|story|content) is (?:only )?(?:available )?"
               r"(?:for|to) (?:paying |premium )?subscribers"
               r"|to continue reading,? (?:please )?(?:subscribe|log in|sign in)",
               re.IGNORECASE),
]
_METERED = re.compile(r"""content_tier["'][^>]*content=["']metered["']"""
                      r"""|content=["']metered["'][^>]*content_tier["']""", re.IGNORECASE)


def looks_paywalled(html: bytes | str) -> bool:
    """Does the page say its article is for subscribers only? Cheap regexes, no parsing.

    True on schema.org ``isAccessibleForFree: false``, ``article:content_tier = locked`` or a
    "subscribe to continue reading" notice. A ``metered`` tier is not a paywall for us: the
    meter is counted client-side with cookies, which our fetcher never sends, so the full text
    is in the page. Free pages that merely load a paywall script are not flagged.
    """
    if isinstance(html, bytes | bytearray | memoryview):
        text = bytes(html)[:2_000_000].decode("utf-8", errors="replace")
    else:
        text = html[:2_000_000]
    if _METERED.search(text):
        return False
    return any(marker.search(text) for marker in _PAYWALL_MARKERS)
