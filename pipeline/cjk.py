"""Chinese, Japanese and Korean text for keyword search on SQLite FTS5.

FTS5's ``unicode61`` tokenizer splits on spaces and punctuation only, so a run of Chinese
characters is one token and ``國防部`` finds nothing inside ``國防部表示今天…``; its
``trigram`` tokenizer finds substrings of three characters or more but never a two-character
word (``臺灣``, ``颱風``), and most Chinese words have two (measured in tests/test_cjk.py). The
Python ``sqlite3`` module cannot load a custom tokenizer, so the text is prepared instead:
every ideograph, kana and Hangul syllable becomes a token of its own (a space either side)
at index time and at query time, and a query phrase then matches its characters in a row —
the way Elasticsearch's ``standard`` tokenizer treats ideographs. Snippets are put back
together for display.

Traditional and Simplified spellings of one word (``臺灣`` / ``台灣`` / ``台湾``) are different
characters; ``query_variants`` expands a query phrase into its spellings with OpenCC.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

_CJK_CHAR = (r"\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
             r"\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ebef")
_ONE = re.compile(f"([{_CJK_CHAR}])")
# CJK punctuation and full-width forms: not tokens, but no spaces around them either.
_CJK_PUNCT = r"\u3000-\u303f\uff00-\uffef"
_SPACED = re.compile(
    f"(?<=[{_CJK_CHAR}{_CJK_PUNCT}\\[\\]]) +(?=[{_CJK_CHAR}{_CJK_PUNCT}\\[\\]])")
_ANY = re.compile(f"[{_CJK_CHAR}]")
_LOCK = threading.Lock()
# OpenCC conversions that give the other spellings of a phrase: to Simplified, and from
# Simplified to Traditional as written in Taiwan and in general.
_CONVERSIONS = ("t2s", "s2twp", "s2t")
# Variant characters both in everyday Traditional use, which OpenCC leaves as they are.
_VARIANTS = {"臺": "台", "台": "臺"}


def has_cjk(text: str | None) -> bool:
    return bool(text) and _ANY.search(text) is not None


def fts_text(text: str | None) -> str:
    """Text as the FTS5 index stores it: each CJK character a token of its own."""
    if not text or not has_cjk(text):
        return text or ""
    return " ".join(_ONE.sub(r" \1 ", text).split(" ")).replace("  ", " ").strip()


def display_text(text: str | None) -> str:
    """A snippet of ``fts_text`` output as people read it (no spaces between CJK
    characters; FTS5's highlight marks ``[[``/``]]`` stay)."""
    if not text or not has_cjk(text):
        return text or ""
    return _SPACED.sub("", text)


@lru_cache(maxsize=4)
def _converter(config: str) -> Any:
    with _LOCK:
        import opencc

        return opencc.OpenCC(config)


@lru_cache(maxsize=4096)
def query_variants(phrase: str) -> tuple[str, ...]:
    """The phrase and its other Chinese spellings (itself alone when it has no CJK)."""
    if not has_cjk(phrase):
        return (phrase,)
    variants = [phrase]
    simplified = _converter("t2s").convert(phrase)
    traditional = [_converter(c).convert(simplified) for c in _CONVERSIONS[1:]]
    for candidate in (simplified, *traditional):
        spellings = [candidate]
        if candidate != simplified:
            spellings.append(candidate.translate(str.maketrans(_VARIANTS)))
        for spelling in spellings:
            if spelling not in variants:
                variants.append(spelling)
    return tuple(variants)


def keyword_pattern(term: str, pattern: str) -> str:
    """``pattern`` (a regex for ``term``) bounded as a whole word where words have
    boundaries: a Chinese or Japanese keyword sits between other characters with no space
    (``臺灣`` in ``在臺灣周邊``), so its CJK ends get no boundary."""
    start = "" if has_cjk(term[:1]) else r"(?<!\w)"
    end = "" if has_cjk(term[-1:]) else r"(?!\w)"
    return f"{start}{pattern}{end}"
