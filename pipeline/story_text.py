"""The text features story assignment reads: what is embedded (title + lead), the words,
names and numbers of the lexical signals, and the shingles that confirm a near-copy.

Pure functions of an article's title and text; no model, no SQL (``story_assignment`` scores
with them, the ``stories`` stage computes them for stored and new articles).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from itertools import chain

# MiniLM reads 256 word pieces. Title + ~600 characters of lead (~130 pieces) scored as well as
# title + everything it can read, and a chunked mean over the whole body scored worse (the
# tail is background, not the event); the shorter input embeds about twice as fast.
LEAD_CHARS = 600
# The word signal reads a little further into the article than the embedding; names and
# numbers further still (a second paragraph often names the other side, the score, the place).
TERM_CHARS = 1000
NAME_CHARS = 3000
_STOPWORD_TEXT = """
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours yourself yourselves said says say
told according one two three four five six seven eight nine ten new also would could may
might must shall us mr mrs ms dr st last first next week year years month months day days
monday tuesday wednesday thursday friday saturday sunday today yesterday tomorrow tonight
january february march april june july august september october november december time
people news report reported reports reuters ap afp update updated breaking photo video
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_TOKEN = re.compile(r"[^\W\d_](?:[\w'’\-.]*\w)?|\d+(?:[.,:]\d+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=[\"“‘'(\[]?[A-Z0-9])")


# ---- article representation -----------------------------------------------------------------

def _clip(text: str, limit: int) -> str:
    """Collapse whitespace and cut at a word boundary near ``limit`` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[:cut if cut > limit // 2 else limit]


def derive_title(text: str | None, limit: int = 200) -> str:
    """A headline for an article that came without one: its first line, else first sentence."""
    for line in (text or "").splitlines():
        line = " ".join(line.split())
        if line:
            first = _SENTENCE_END.split(line, maxsplit=1)[0]
            return _clip(first, limit)
    return ""


def article_text_for_embedding(title: str | None, text: str | None) -> str:
    """Title plus the lead: the part of a news article that states the event."""
    title = " ".join((title or "").split())
    lead = _clip(text or "", LEAD_CHARS)
    if title and lead.startswith(title):  # pages whose text repeats the headline
        lead = lead[len(title):].lstrip(" .:-")
    return f"{title}. {lead}" if title and lead else (title or lead)


@lru_cache(maxsize=1 << 16)
def _normalised(raw: str) -> str:
    """A word or number as compared: lower case, no possessive 's (memoised: news reuses its
    words, and every article's features tokenise ~4,000 characters)."""
    token = raw.lower().replace("’", "'").rstrip(".")
    return token[:-2] if token.endswith("'s") else token


def forget_words() -> None:
    """Empty the word memo between a run's chunks: filled again by the next chunk's window
    (nearly all hits within a chunk), while kept it grows with the run's vocabulary (64k
    words) and its strings, made during each chunk's largest allocations, keep Python's
    object arenas from being returned (docs/performance.md, Peak RSS)."""
    _normalised.cache_clear()


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """(as written, normalised) for each word or number."""
    for raw in _TOKEN.findall(text):
        yield raw, _normalised(raw)


def _keep(token: str) -> bool:
    """Numbers of two or more characters; words of three or more that are not stop words."""
    if token[:1].isdigit():
        return len(token) >= 2
    return len(token) >= 3 and token not in _STOPWORDS


def _terms(tokens: Iterable[tuple[str, str]]) -> frozenset[str]:
    return frozenset(token for _, token in tokens if token and _keep(token))


def _names(tokens: Iterable[tuple[str, str]]) -> frozenset[str]:
    return frozenset(token for raw, token in tokens
                     if token and _keep(token) and (raw[0].isdigit() or raw[0].isupper()))


def _shingles(words: list[str]) -> frozenset[int]:
    if len(words) < 3:
        return frozenset({hash(tuple(words))}) if words else frozenset()
    return frozenset(hash(gram) for gram in zip(words, words[1:], words[2:], strict=False))


def story_terms(title: str | None, text: str | None) -> frozenset[str]:
    """Words, names and numbers of title + lead (lower case, stop words dropped).

    Names and numbers are what tell two same-type events apart ("6.1" vs "5.6", "Lohan" vs
    "Reid"); weighting by how few articles in play use a term (see ``StoryAssigner``) makes
    them count more than the shared vocabulary of the event type.
    """
    return _terms(_tokens(f"{title or ''}\n{(text or '')[:TERM_CHARS]}"))


def story_names(title: str | None, text: str | None) -> frozenset[str]:
    """Capitalised words and numbers of title + the first paragraphs (lower-cased).

    A cheap stand-in for named entities that needs no model or nltk data: what separates
    "Klitschko stops Thompson" from "Klitschko beats Rahman", or Banstead's Waitrose fire from
    Wellington's, is who, where and how many.
    """
    return _names(_tokens(f"{title or ''}\n{(text or '')[:NAME_CHARS]}"))


def text_shingles(text: str | None) -> frozenset[int]:
    """Hashes of the word 3-grams of the first ``NAME_CHARS`` characters of the body: two
    texts sharing most of them are the same text (a wire copy, a re-headlined re-save), which
    an embedding of title + lead cannot tell from two reports of one event."""
    return _shingles([token for _, token in _tokens((text or "")[:NAME_CHARS])])


def story_features(title: str | None, text: str | None
                   ) -> tuple[frozenset[str], frozenset[str], frozenset[int]]:
    """``story_terms``, ``story_names`` and ``text_shingles`` of one article, with the title
    and the body's first ``NAME_CHARS`` characters tokenised once for all three (no token
    spans the newline that joins title and body, so each part tokenises alone)."""
    text = text or ""
    heading = list(_tokens(title or ""))
    body = list(_tokens(text[:NAME_CHARS]))
    return (_terms(chain(heading, _tokens(text[:TERM_CHARS]))), _names(chain(heading, body)),
            _shingles([token for _, token in body]))


def shingle_overlap(a: frozenset[int], b: frozenset[int]) -> float:
    """Jaccard similarity of two shingle sets (0 when either is empty)."""
    if not a or not b:
        return 0.0
    shared = len(a & b)
    return shared / (len(a) + len(b) - shared)


