"""Bytes of a feed (RSS, Atom, RDF, JSON Feed) -> :class:`ParsedFeed` with plain-text entries.

feedparser does the format work; this module only maps its result and turns markup into
plain text. It never lets feedparser touch the network or the file system (see parse_feed).
"""

from __future__ import annotations

import calendar
import html
import io
import json
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser
import lxml.etree
import lxml.html

from pipeline.feedfast import parse_large_feed
from pipeline.models import FeedEntry, ParsedFeed
from pipeline.sanitize import (
    plausible_date,
    strip_control,
    strip_control_bytes,
    strip_control_refs,
)


class FeedParseError(Exception):
    """The document is not a feed we can use (nothing parsed, or not a feed at all)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# ---- markup -> plain text -----------------------------------------------------------------

_PARAGRAPH = "\ue000"  # private-use marks survive text_content() and never occur in feeds
_LINE = "\ue001"
_DROP_TAGS = ("script", "style", "noscript", "template", "iframe", "object", "embed", "svg",
              "math", "head", "title", "select", "button")
_BLOCK_TAGS = frozenset({
    "p", "div", "section", "article", "aside", "header", "footer", "main", "nav", "blockquote",
    "pre", "ul", "ol", "dl", "table", "tr", "figure", "figcaption", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "address", "details", "summary", "form", "fieldset",
})
_LINE_TAGS = frozenset({"br", "li", "dt", "dd", "td", "th", "caption"})
_PRIVATE_MARKS = re.compile(f"[{_PARAGRAPH}{_LINE}]")
_TAG = re.compile(r"<[^>]*>")
_WHITESPACE = re.compile(r"\s+")
_LOOKS_LIKE_MARKUP = re.compile(r"<[a-zA-Z/!?]|&(#?\w+);")
_HTML_TAG = re.compile(
    r"</?(?:a|abbr|b|blockquote|br|cite|code|div|em|font|h[1-6]|hr|i|img|li|ol|p|pre|q|s|"
    r"small|span|strong|sub|sup|table|td|tr|u|ul)\b[^<>]*>", re.IGNORECASE)


def html_to_text(markup: str | None) -> str:
    """Plain text of an HTML fragment: no tags, scripts or styles, entities decoded,
    whitespace collapsed, paragraphs separated by a blank line and line breaks kept."""
    if not markup:
        return ""
    markup = _clean(strip_control_refs(markup))
    if not _LOOKS_LIKE_MARKUP.search(markup):
        return _normalise(markup)
    try:
        root = lxml.html.fragment_fromstring(markup, create_parent="div")
    except (lxml.etree.ParserError, ValueError):
        return _normalise(html.unescape(_TAG.sub(" ", markup)))
    for element in list(root.iter(*_DROP_TAGS)):
        element.drop_tree()
    for element in root.iter():
        tag = element.tag if isinstance(element.tag, str) else ""
        mark = (_PARAGRAPH if tag.lower() in _BLOCK_TAGS
                else _LINE if tag.lower() in _LINE_TAGS else "")
        if mark and element is not root:
            element.tail = mark + (element.tail or "")
            if mark == _PARAGRAPH:  # a block also starts on its own paragraph
                element.text = mark + (element.text or "")
    return _normalise(root.text_content())


def plain_to_text(text: str | None) -> str:
    """Normalise plain text the way html_to_text does: blank lines separate paragraphs."""
    if not text:
        return ""
    text = _clean(text).replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"\n[ \t]*\n\s*", _PARAGRAPH, text).replace("\n", _LINE)
    return _normalise(text)


def _clean(text: str) -> str:
    """Feed text without escape sequences, control characters or our private marks."""
    return _PRIVATE_MARKS.sub("", strip_control(text))


def _normalise(text: str) -> str:
    text = _WHITESPACE.sub(" ", text)
    text = re.sub(f"(?: ?{_LINE}){{2,}} ?", _PARAGRAPH, text)  # <br><br> is a paragraph
    paragraphs = []
    for paragraph in text.split(_PARAGRAPH):
        lines = [line.strip() for line in paragraph.split(_LINE)]
        paragraph = "\n".join(line for line in lines if line)
        if paragraph:
            paragraphs.append(paragraph)
    return "\n\n".join(paragraphs)


# ---- feedparser result -> models ----------------------------------------------------------


def _utc(parsed: time.struct_time | None) -> datetime | None:
    """feedparser's *_parsed values are UTC struct_times; anything odd becomes None."""
    if not parsed:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
    except (OverflowError, ValueError, OSError, TypeError):
        return None


def _guid(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = strip_control(value, keep_newlines=False).strip()
    return value[:2000] or None


def _http_link(value: Any, base: str) -> str | None:
    if not isinstance(value, str):
        return None
    value = strip_control(value, keep_newlines=False).strip()
    if not value:
        return None
    try:
        link = urljoin(base, value)
        scheme = urlsplit(link).scheme.lower()
    except ValueError:
        return None
    return link if scheme in ("http", "https") else None


def _entry_link(entry: Any, base: str) -> str | None:
    link = _http_link(entry.get("link"), base)
    if link:
        return link
    for candidate in entry.get("links") or []:
        if candidate.get("rel", "alternate") == "alternate":
            link = _http_link(candidate.get("href"), base)
            if link:
                return link
    if entry.get("guidislink"):
        return _http_link(entry.get("id"), base)
    return None


def _authors(entry: Any) -> list[str]:
    names: list[str] = []
    for author in entry.get("authors") or []:
        name = (author.get("name") or author.get("email")) if hasattr(author, "get") else None
        if isinstance(name, str):
            names.append(html_to_text(name))
    if not names and isinstance(entry.get("author"), str):
        names.append(html_to_text(entry["author"]))
    unique: list[str] = []
    for name in names:
        if name and name not in unique:
            unique.append(name[:200])
    return unique


def _language(*candidates: Any) -> str | None:
    for value in candidates:
        if isinstance(value, str) and value.strip():
            tag = value.strip().split(",")[0].strip().replace("_", "-").lower()
            if tag and len(tag) <= 16:
                return tag
    return None


def _text_of(detail: Any, fallback: Any = None) -> str:
    """Plain text of a feedparser text construct (a detail dict) or a raw string."""
    value = detail.get("value") if hasattr(detail, "get") else None
    if value is None:
        value = fallback
    if not isinstance(value, str):
        return ""
    if hasattr(detail, "get") and detail.get("type") == "text/plain" \
            and not _HTML_TAG.search(value):
        # Literal text (Atom type="text"): "<" is a character. feedparser also labels RSS
        # titles text/plain, and those often carry escaped HTML, hence the tag check.
        return plain_to_text(value)
    return html_to_text(value)


# Link text that some feeds put in <title> where the headline belongs (a real feed titles every
# item "More »"). Kept, it would name stories and alerts, and its capitalised word would be a
# name shared by every such item; dropped, the headline comes from the summary's first sentence.
_LINK_LABELS = frozenset({
    "more", "read more", "continue reading", "full story", "read full story",
    "read the full story", "click here", "link", "permalink", "untitled", "no title",
})
_NOT_WORD = re.compile(r"[\W_]+")


def entry_headline(title: str) -> str:
    """``title`` as an entry's headline, or "" when it is only link text or punctuation."""
    label = " ".join(_NOT_WORD.sub(" ", title).lower().split())
    return "" if not label or label in _LINK_LABELS else title


def _content(entry: Any) -> str:
    texts: list[str] = []
    for part in entry.get("content") or []:
        text = _text_of(part)
        if text and text not in texts:
            texts.append(text)
    return "\n\n".join(texts)


def _entry(entry: Any, base: str, feed_language: str | None) -> FeedEntry:
    content_list = entry.get("content") or []
    first_content = content_list[0] if content_list else {}
    guid = entry.get("id")
    return FeedEntry(
        link=_entry_link(entry, base),
        guid=_guid(guid),
        title=entry_headline(_text_of(entry.get("title_detail"), entry.get("title"))),
        summary=_text_of(entry.get("summary_detail"), entry.get("summary")),
        content=_content(entry),
        published_at=_utc(entry.get("published_parsed")),
        updated_at=_utc(entry.get("updated_parsed")),
        authors=_authors(entry),
        language=_language(
            first_content.get("language") if hasattr(first_content, "get") else None,
            (entry.get("summary_detail") or {}).get("language"),
            entry.get("language"), feed_language),
    )


def _ttl_seconds(value: Any) -> float | None:
    """RSS <ttl> is minutes."""
    try:
        minutes = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    if minutes != minutes or minutes <= 0 or minutes == float("inf"):
        return None
    return minutes * 60.0


def _bozo_reason(result: Any) -> str | None:
    if not result.get("bozo"):
        return None
    exc = result.get("bozo_exception")
    if exc is None:
        return "ill-formed feed"
    message = str(getattr(exc, "getMessage", lambda: exc)()) or type(exc).__name__
    return f"{type(exc).__name__}: {message}"[:500]


# ---- JSON Feed (feedparser 6.0 does not read it) -------------------------------------------


def _looks_like_json(content: bytes, content_type: str) -> bool:
    start = content.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return start == b"{" or ("json" in content_type.lower() and start in (b"{", b"["))


def _json_date(value: Any) -> datetime | None:
    """JSON Feed says RFC 3339; RFC 822 and friends occur too (feedparser's parser then)."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        from feedparser import datetimes as feed_dates

        return _utc(feed_dates._parse_date(value))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _json_authors(item: dict[str, Any]) -> list[str]:
    found = item.get("authors")
    people = found if isinstance(found, list) else []
    if not people and isinstance(item.get("author"), dict):
        people = [item["author"]]
    names: list[str] = []
    for person in people:
        name = person.get("name") if isinstance(person, dict) else None
        text = html_to_text(name) if isinstance(name, str) else ""
        if text and text not in names:
            names.append(text[:200])
    return names


def _json_text(value: Any) -> str:
    return html_to_text(value) if isinstance(value, str) else ""


def _parse_json_feed(content: bytes, url: str, headers: dict[str, str]) -> ParsedFeed:
    try:
        data = json.loads(content.decode("utf-8-sig", "replace"))
    except (ValueError, RecursionError) as exc:
        raise FeedParseError(f"invalid JSON: {exc}"[:500]) from exc
    items = data.get("items") if isinstance(data, dict) else None
    version = str(data.get("version", "")) if isinstance(data, dict) else ""
    if not isinstance(items, list) or ("jsonfeed.org" not in version and not items):
        raise FeedParseError("JSON, but not a JSON Feed")
    feed_language = _language(data.get("language"), headers.get("content-language"))
    entries: list[FeedEntry] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        guid = item.get("id")
        content_html = _json_text(item.get("content_html"))
        content_text = item.get("content_text")
        entries.append(FeedEntry(
            link=_http_link(item.get("url"), url) or _http_link(item.get("external_url"), url),
            guid=_guid(str(guid) if guid is not None else None),
            title=entry_headline(_json_text(item.get("title"))),
            summary=_json_text(item.get("summary")),
            content=content_html or (plain_to_text(content_text)
                                     if isinstance(content_text, str) else ""),
            published_at=_json_date(item.get("date_published")),
            updated_at=_json_date(item.get("date_modified")),
            authors=_json_authors(item) or _json_authors(data),
            language=_language(item.get("language"), feed_language),
        ))
    title = _json_text(data.get("title")) or None
    return ParsedFeed(title=title[:1000] if title else None, entries=entries)


def parse_feed(content: bytes, url: str, headers: dict[str, str], *,
               fast_min_bytes: int | None = None) -> ParsedFeed:
    """Parse a fetched feed body. Raises FeedParseError when it holds nothing usable.

    ``headers`` (the response's, lower-case names) give feedparser the charset; the final
    ``url`` is the base for relative links. The body is handed over as a stream: given bytes,
    feedparser would first try them as a *file name* (and a str as a URL to fetch).
    HTML sanitising and relative-URI rewriting inside content are off: text is extracted
    here and markup discarded, so they would only cost time.

    A body of at least ``fast_min_bytes`` (None = never) that is well-formed RSS 2.0 or Atom
    is read by the streaming parser of :mod:`pipeline.feedfast` instead (the same fields,
    about ten times faster); anything else still goes to feedparser.
    """
    if not content or not content.strip():
        raise FeedParseError("empty document")
    content = strip_control_bytes(content)  # one NUL must not make the feed ill-formed
    response_headers = {k.lower(): v for k, v in headers.items()}
    if _looks_like_json(content, response_headers.get("content-type", "")):
        return _with_plausible_dates(_parse_json_feed(content, url, response_headers))
    if fast_min_bytes is not None and len(content) >= fast_min_bytes:
        raw = parse_large_feed(content, url)
        if raw is not None:
            return _with_plausible_dates(_mapped(raw, raw["entries"], url,
                                                 response_headers, None))
    response_headers["content-location"] = url
    response_headers.pop("content-encoding", None)  # the fetcher already decoded the body
    try:
        result = feedparser.parse(io.BytesIO(content), response_headers=response_headers,
                                  sanitize_html=False, resolve_relative_uris=False)
    except Exception as exc:  # feedparser is meant not to raise; a bug there is a bad feed
        raise FeedParseError(f"feedparser failed: {type(exc).__name__}: {exc}") from exc
    feed = result.get("feed") or {}
    raw_entries = result.get("entries") or []
    title = _text_of(feed.get("title_detail"), feed.get("title")) or None
    if not raw_entries:
        if not result.get("version"):
            raise FeedParseError(_bozo_reason(result) or "not a feed (no RSS/Atom/JSON Feed)")
        if result.get("bozo") and not title:
            raise FeedParseError(_bozo_reason(result) or "ill-formed feed")
    return _with_plausible_dates(_mapped(feed, raw_entries, url, response_headers,
                                         _bozo_reason(result)))


def _mapped(feed: Any, raw_entries: list[Any], base: str, response_headers: dict[str, str],
            bozo_reason: str | None) -> ParsedFeed:
    """Raw feed fields (feedparser's, or the fast path's in the same vocabulary) -> models.

    ``base`` is the feed's URL: xml:base is already applied; what is left is relative to it.
    """
    title = _text_of(feed.get("title_detail"), feed.get("title")) or None
    feed_language = _language(feed.get("language"), response_headers.get("content-language"))
    entries = [_entry(entry, base, feed_language) for entry in raw_entries]
    return ParsedFeed(title=title[:1000] if title else None, entries=entries,
                      ttl_s=_ttl_seconds(feed.get("ttl")), bozo_reason=bozo_reason)


def _with_plausible_dates(parsed: ParsedFeed) -> ParsedFeed:
    """Drop entry dates no news item can have (before 1990, more than a day ahead), counted
    per entry in ``implausible_dates``: a year-1 or year-9999 date would otherwise break the
    date maths (story windows) for every article."""
    now = datetime.now(UTC)
    for entry in parsed.entries:
        dropped = False
        for name in ("published_at", "updated_at"):
            value = getattr(entry, name)
            if value is not None and plausible_date(value, now) is None:
                setattr(entry, name, None)
                dropped = True
        parsed.implausible_dates += dropped
    return parsed
