"""Hostile-input hygiene shared by every stage: control characters and implausible dates.

Feed text is written by strangers. Before it is parsed, stored, printed to a terminal or
used as a query parameter, terminal escape sequences (colours, screen clears, OSC 8
hyperlinks) and control characters are removed, and dates outside the range a news item can
have are rejected, so one odd entry can never crash a stage or take over a terminal.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# Earliest plausible publication date: before the web, any feed date is a typo or a default.
EARLIEST_DATE = datetime(1990, 1, 1, tzinfo=UTC)
# Clock skew allowance: a date further in the future than this is wrong, not early news.
FUTURE_SLACK = timedelta(days=1)

# ESC-introduced sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), the other
# string sequences (DCS, SOS, PM, APC), and two-character escapes; 8-bit CSI/OSC likewise.
# A string sequence needs its terminator within 2,048 characters: an unterminated one loses
# only its introducer (removed with the control characters), never the text after it.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]{0,2048}(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -/]*[0-~]?",
)
# C0 controls except tab/newline/carriage return, DEL, C1 controls, Unicode non-characters,
# and the bidirectional overrides that can make a printed line read differently.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff\u202a-\u202e"
                      r"\u2066-\u2069]")
_CONTROL_ANY = re.compile(r"[\x00-\x1f\x7f-\x9f\ufffe\uffff\u202a-\u202e\u2066-\u2069]")
# Numeric character references (&#1; &#x1b;): checked by code point in strip_control_refs.
_CHAR_REF = re.compile(r"&#(?:[xX]([0-9a-fA-F]{1,8})|([0-9]{1,10}));?")


def strip_control(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` without escape sequences and control characters.

    Tabs and newlines stay unless ``keep_newlines`` is False (one-line display fields, where
    they become spaces).
    """
    if not text:
        return text
    text = _ESCAPE_SEQUENCE.sub("", text)
    if keep_newlines:
        return _CONTROL.sub("", text)
    return _CONTROL_ANY.sub(lambda m: " " if m.group() in "\t\n\r" else "", text)


# The same in an undecoded body: CSI and OSC sequences, then C0 control bytes (not tab/LF/CR).
_CONTROL_BYTES = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b\][^\x07\x1b]{0,2048}(?:\x07|\x1b\\)"
                            rb"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def strip_control_bytes(content: bytes) -> bytes:
    """A fetched body (feed or page) without escape sequences and C0 control bytes, which no
    XML document may hold and which parsers would otherwise keep, drop or choke on, leaving
    fragments of the sequence in the text. UTF-16/32 bodies, where NUL bytes are part of
    the characters, are returned unchanged (their parser copes, strip_control cleans)."""
    head = content[:4]
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head:
        return content
    return _CONTROL_BYTES.sub(b"", content)


def strip_control_refs(markup: str) -> str:
    """Remove character references to control characters (``&#1;``) from markup, which an
    HTML parser would otherwise turn back into the characters strip_control removes (and
    lxml refuses to hold)."""

    def keep(match: re.Match[str]) -> str:
        hex_digits, digits = match.groups()
        code = int(hex_digits, 16) if hex_digits else int(digits)
        if code > 0x10FFFF or (code < 0x20 and code not in (9, 10, 13)) \
                or _CONTROL.match(chr(code)):
            return ""
        return match.group()

    return _CHAR_REF.sub(keep, markup)


def has_control(text: str) -> bool:
    """True when ``text`` holds an escape sequence or a control character (not tab/newline)."""
    return bool(_CONTROL.search(text) or "\x1b" in text)


def plausible_date(value: datetime | None, now: datetime | None = None) -> datetime | None:
    """``value`` when a news item can have that date (1990 to a day from now), else None."""
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    latest = (now or datetime.now(UTC)) + FUTURE_SLACK
    return aware if EARLIEST_DATE <= aware <= latest else None
