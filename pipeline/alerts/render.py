"""What an alert says, as plain text, HTML email, Slack Block Kit and digests.

Every string a feed supplies (titles, outlet names, summaries, reasons, URLs) is untrusted:
HTML is escaped, Slack's mrkdwn control characters (&, <, >) are escaped so a title cannot
mention @channel or forge a link, only http(s) URLs become links, and strings bound for
one-line places (subjects, headers) lose their line breaks.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import nh3

KIND_LABELS = {"new": "New story", "update": "Update"}
SUMMARY_CHARS = 400
SUBJECT_CHARS = 200
SLACK_HEADER_CHARS = 150  # Block Kit limits
SLACK_TEXT_CHARS = 3000
SLACK_MAX_ITEMS = 20  # 2 blocks each, under Slack's 50 blocks per message

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")


@dataclass
class AlertMessage:
    """One alert as decided: a snapshot of the story, resent unchanged on retries."""

    watch: str
    kind: str  # new | update
    story_id: str
    title: str
    sources: list[tuple[str, str | None]] = field(default_factory=list)  # (outlet, link)
    first_seen: datetime | None = None
    summary: str = ""
    reasons: list[str] = field(default_factory=list)
    article_count: int = 0
    score: float | None = None
    new_sources: list[str] = field(default_factory=list)  # for updates: outlets since last
    timezone: str = "UTC"  # the watch's, for showing times
    alert_id: int | None = None
    # (headline as published, language) of reports not in English (pipeline/language.py)
    originals: list[tuple[str, str]] = field(default_factory=list)

    @property
    def link(self) -> str | None:
        """The story's link: the first report's, or the first source with one."""
        for _name, url in self.sources:
            if safe_url(url):
                return safe_url(url)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "watch": self.watch, "kind": self.kind, "story_id": self.story_id,
            "title": self.title,
            "sources": [{"name": name, "url": url} for name, url in self.sources],
            "first_seen": self.first_seen.isoformat() if self.first_seen else None,
            "summary": self.summary, "reasons": list(self.reasons),
            "article_count": self.article_count, "score": self.score,
            "new_sources": list(self.new_sources), "timezone": self.timezone,
            "alert_id": self.alert_id,
            "originals": [{"title": t, "language": lang} for t, lang in self.originals],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertMessage:
        first_seen = data.get("first_seen")
        if isinstance(first_seen, str):
            first_seen = datetime.fromisoformat(first_seen)
        return cls(
            watch=data["watch"], kind=data["kind"], story_id=data["story_id"],
            title=data.get("title") or "",
            sources=[(s.get("name") or "", s.get("url")) for s in data.get("sources") or []],
            first_seen=first_seen, summary=data.get("summary") or "",
            reasons=list(data.get("reasons") or []),
            article_count=int(data.get("article_count") or 0), score=data.get("score"),
            new_sources=list(data.get("new_sources") or []),
            timezone=data.get("timezone") or "UTC", alert_id=data.get("alert_id"),
            originals=[(o.get("title") or "", o.get("language") or "")
                       for o in data.get("originals") or []],
        )


@dataclass
class Rendered:
    """One outgoing message in every form a channel may need."""

    subject: str  # one line, no markup
    text: str  # plain text (email text/plain, console)
    html: str  # escaped HTML document (email text/html)
    blocks: list[dict[str, Any]]  # Slack Block Kit, mrkdwn escaped
    fallback: str  # Slack notification text, mrkdwn escaped
    record: dict[str, Any]  # JSONL outbox line
    key: str  # stable identity (email Message-ID), the same on every retry


# ---- sanitising -----------------------------------------------------------------------------

def one_line(value: object, limit: int | None = None) -> str:
    """Untrusted text for a one-line place: no control characters, no line breaks."""
    text = _SPACE.sub(" ", _CONTROL.sub(" ", str(value or ""))).strip()
    return shorten(text, limit) if limit else text


def plain(value: object) -> str:
    """Feed text that may carry markup, as plain text (tags and scripts dropped)."""
    text = str(value or "")
    if "<" in text:
        text = html.unescape(nh3.clean(text, tags=set()))
    return one_line(text)


def shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:.-") + "…"


def safe_url(url: object) -> str | None:
    """Only absolute http(s) URLs are shown as links (no javascript:, data:, ...)."""
    text = str(url or "").strip()
    if not text or _CONTROL.search(text) or _SPACE.search(text):
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return text


def h(value: object) -> str:
    return html.escape(str(value or ""), quote=True)


def mrkdwn(value: object) -> str:
    """Slack's required escaping: &, < and > (so no <!channel>, <@U…> or forged links)."""
    return str(value or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_link(url: str | None, label: str) -> str:
    url = safe_url(url)
    if not url:
        return mrkdwn(label)
    target = (url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E")
              .replace("|", "%7C"))
    return f"<{target}|{mrkdwn(label.replace('|', '¦'))}>"


def format_time(value: datetime | None, timezone: str = "UTC") -> str:
    if value is None:
        return "unknown"
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


# ---- pieces ---------------------------------------------------------------------------------

def _label(message: AlertMessage) -> str:
    return KIND_LABELS.get(message.kind, message.kind.capitalize())


def _title(message: AlertMessage) -> str:
    return one_line(message.title) or "(untitled story)"


def _meta(message: AlertMessage) -> str:
    sources = len(message.sources)
    return (f"watch {one_line(message.watch)} · first seen "
            f"{format_time(message.first_seen, message.timezone)} · "
            f"{message.article_count} article{'s' if message.article_count != 1 else ''} from "
            f"{sources} source{'s' if sources != 1 else ''}")


def _summary(message: AlertMessage) -> str:
    return shorten(plain(message.summary), SUMMARY_CHARS)


def _reasons(message: AlertMessage) -> list[str]:
    reasons = [one_line(r, 200) for r in message.reasons if one_line(r)]
    if message.score is not None:
        reasons.append(f"relevance score {message.score:.2f}")
    return reasons


def _originals(message: AlertMessage) -> list[str]:
    """``Original headline (Chinese (Traditional)): …`` for each report not in English."""
    return [f"Original headline ({one_line(language, 40)}): {one_line(title, 200)}"
            for title, language in message.originals if one_line(title)]


def _sources(message: AlertMessage) -> list[tuple[str, str | None]]:
    return [(one_line(name, 120) or "unknown", safe_url(url)) for name, url in message.sources]


def render_subject(message: AlertMessage) -> str:
    return one_line(f"[newswatch] {message.watch}: {_label(message)}: {_title(message)}",
                    SUBJECT_CHARS)


def render_text(message: AlertMessage) -> str:
    """Plain text: the email's text/plain part and the console."""
    lines = [f"{_label(message)}: {_title(message)}", _meta(message)]
    if message.kind == "update" and message.new_sources:
        lines.append("New sources since the last alert: "
                     + ", ".join(one_line(s, 120) for s in message.new_sources))
    link = message.link
    if link:
        lines.append(link)
    lines += _originals(message)
    summary = _summary(message)
    if summary:
        lines += ["", summary]
    sources = _sources(message)
    if sources:
        lines += ["", "Sources:"]
        lines += [f"  - {name}: {url}" if url else f"  - {name}" for name, url in sources]
    reasons = _reasons(message)
    if reasons:
        lines += ["", "Why it matched:"]
        lines += [f"  - {reason}" for reason in reasons]
    return "\n".join(lines) + "\n"


def _html_item(message: AlertMessage, heading: str = "h2") -> str:
    link = message.link
    title = h(_title(message))
    title_html = f'<a href="{h(link)}">{title}</a>' if link else title
    parts = [f'<{heading} style="margin:0 0 4px">{h(_label(message))}: {title_html}</{heading}>',
             f'<p style="margin:0 0 8px;color:#555;font-size:13px">{h(_meta(message))}</p>']
    if message.kind == "update" and message.new_sources:
        parts.append("<p><strong>New sources since the last alert:</strong> "
                     + h(", ".join(one_line(s, 120) for s in message.new_sources)) + "</p>")
    parts += [f'<p style="margin:0 0 8px">{h(line)}</p>' for line in _originals(message)]
    summary = _summary(message)
    if summary:
        parts.append(f"<p>{h(summary)}</p>")
    sources = _sources(message)
    if sources:
        items = "".join(f'<li><a href="{h(url)}">{h(name)}</a></li>' if url
                        else f"<li>{h(name)}</li>" for name, url in sources)
        parts.append(f"<p style=\"margin:8px 0 0\"><strong>Sources</strong></p><ul>{items}</ul>")
    reasons = _reasons(message)
    if reasons:
        items = "".join(f"<li>{h(reason)}</li>" for reason in reasons)
        parts.append(f"<p style=\"margin:8px 0 0\"><strong>Why it matched</strong></p>"
                     f"<ul>{items}</ul>")
    return "\n".join(parts)


def _html_document(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{h(title)}</title></head>\n"
            "<body style=\"font-family:sans-serif;max-width:640px\">\n"
            f"{body}\n"
            "<p style=\"color:#888;font-size:12px\">Sent by newswatch.</p>\n</body></html>\n")


def render_html(message: AlertMessage) -> str:
    """The email's text/html part; every feed-supplied string escaped."""
    return _html_document(render_subject(message), _html_item(message))


def _slack_item_blocks(message: AlertMessage, *, summary: bool = True) -> list[dict[str, Any]]:
    text = f"*{mrkdwn(_label(message))}: {slack_link(message.link, _title(message))}*"
    if message.kind == "update" and message.new_sources:
        text += "\nNew sources: " + mrkdwn(", ".join(one_line(s, 80)
                                                      for s in message.new_sources))
    for line in _originals(message):
        text += "\n" + mrkdwn(line)
    body = _summary(message) if summary else ""
    if body:
        text += "\n" + mrkdwn(body)
    sources = ", ".join(slack_link(url, name) for name, url in _sources(message)[:10])
    context = mrkdwn(_meta(message))
    if sources:
        context += "\nSources: " + sources
    reasons = _reasons(message)
    if reasons:
        context += "\nWhy: " + mrkdwn("; ".join(reasons))
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": shorten(text, SLACK_TEXT_CHARS)}},
        {"type": "context", "elements": [{"type": "mrkdwn",
                                          "text": shorten(context, SLACK_TEXT_CHARS)}]},
    ]


def _slack_header(text: str) -> dict[str, Any]:
    return {"type": "header",
            "text": {"type": "plain_text", "text": mrkdwn(shorten(one_line(text),
                                                                  SLACK_HEADER_CHARS))}}


def render_slack_blocks(message: AlertMessage) -> list[dict[str, Any]]:
    """Block Kit for an incoming webhook; mrkdwn escaped."""
    return [_slack_header(f"{_label(message)}: {_title(message)}"),
            *_slack_item_blocks(message)]


def render_message(message: AlertMessage) -> Rendered:
    """One alert in every form."""
    subject = render_subject(message)
    return Rendered(
        subject=subject, text=render_text(message), html=render_html(message),
        blocks=render_slack_blocks(message),
        fallback=mrkdwn(one_line(f"{_label(message)} ({message.watch}): {_title(message)}",
                                 SUBJECT_CHARS)),
        record={"type": "alert", **message.to_dict()},
        key=f"{message.watch}/{message.kind}/{message.story_id}/{message.alert_id}",
    )


# ---- several alerts in one message ----------------------------------------------------------

def _more_lines(more: list[AlertMessage]) -> list[tuple[str, str | None]]:
    return [(f"{_label(m)}: {_title(m)}", m.link) for m in more]


def render_digest(watch: str, messages: list[AlertMessage], *, limit: int,
                  window: str | None = None, timezone: str = "UTC") -> Rendered:
    """One message for many alerts: the first ``limit`` in full, then "+N more" with titles.

    ``limit=0`` gives a pure roll-up (the alerts over a watch's ``max_per_window``).
    """
    shown, more = messages[:limit], messages[limit:]
    watch_name = one_line(watch, 80)
    if limit > 0:
        heading = (f"Digest for {watch_name}" + (f" ({one_line(window)})" if window else "")
                   + f": {len(messages)} alert{'s' if len(messages) != 1 else ''}")
    else:
        heading = f"+{len(more)} more alert{'s' if len(more) != 1 else ''} for {watch_name}"
    subject = one_line(f"[newswatch] {heading}", SUBJECT_CHARS)
    more_title = f"+{len(more)} more:" if shown else f"{heading}:"

    text_parts = [heading, ""]
    for message in shown:
        text_parts += [render_text(message), "-" * 40]
    if more:
        text_parts.append(more_title)
        text_parts += [f"  - {title}" + (f" — {url}" if url else "")
                       for title, url in _more_lines(more)]
    text = "\n".join(text_parts).rstrip("-\n") + "\n"

    body = [f"<h1 style=\"font-size:20px\">{h(heading)}</h1>"]
    for message in shown:
        body += [_html_item(message, "h3"), "<hr>"]
    if more:
        items = "".join(f'<li><a href="{h(url)}">{h(title)}</a></li>' if url
                        else f"<li>{h(title)}</li>" for title, url in _more_lines(more))
        body.append(f"<p><strong>{h(more_title)}</strong></p><ul>{items}</ul>")

    slack_shown = shown[:SLACK_MAX_ITEMS]
    slack_more = shown[SLACK_MAX_ITEMS:] + more
    blocks: list[dict[str, Any]] = [_slack_header(heading)]
    for message in slack_shown:
        blocks += _slack_item_blocks(message)
    if slack_more:
        lines = "\n".join(f"• {slack_link(url, title)}" for title, url in _more_lines(slack_more))
        label = f"+{len(slack_more)} more:" if slack_shown else f"{heading}:"
        blocks.append({"type": "section", "text": {
            "type": "mrkdwn",
            "text": shorten(f"*{mrkdwn(label)}*\n{lines}", SLACK_TEXT_CHARS)}})

    kind = "digest" if limit > 0 else "rollup"
    record = {
        "type": kind, "watch": watch, "window": window, "total": len(messages),
        "alerts": [m.to_dict() for m in shown],
        "more": [{"kind": m.kind, "story_id": m.story_id, "title": m.title, "url": m.link,
                  "alert_id": m.alert_id} for m in more],
    }
    ids = ",".join(str(m.alert_id) for m in messages)
    return Rendered(subject=subject, text=text, html=_html_document(subject, "\n".join(body)),
                    blocks=blocks, fallback=mrkdwn(subject), record=record,
                    key=f"{watch}/{kind}/{window or ids}")
