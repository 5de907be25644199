"""The search contract: one interface, one result shape, every backend.

Backends (SQLite FTS5 by default, Elasticsearch at scale) index :class:`SearchDocument` built
from the SQL records and answer :class:`SearchQuery` with :class:`SearchResults`. The index is
always rebuildable from the records (``newswatch reindex``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from pipeline.settings import SearchSettings

SearchMode = Literal["keyword", "semantic", "hybrid"]


class SearchUnavailable(Exception):
    """The search backend cannot be reached; records are safe and indexing catches up later."""


class SearchMisconfigured(Exception):
    """Search cannot work as configured (credentials, privileges, index layout): retrying
    cannot help, so the stage fails with this one-line reason and the fix it names."""


class SearchAccessDenied(SearchMisconfigured):
    """The cluster refused the credentials (401) or the privileges they carry (403)."""


class SearchMappingMismatch(SearchMisconfigured):
    """The live index cannot hold what this run sends (vector field or dims); the fix is
    ``newswatch reindex``, which builds a new index with the current layout."""


@dataclass(slots=True)
class SearchDocument:
    article_id: str
    title: str
    text: str
    url: str | None
    source: str | None
    published_at: datetime | None
    language: str | None = None
    story_id: str | None = None
    content_hash: str | None = None
    feeds: list[str] = field(default_factory=list)
    embedding: list[float] | None = None

    @classmethod
    def from_article(cls, article: dict[str, Any], embedding: list[float] | None = None,
                     feeds: list[str] | None = None) -> SearchDocument:
        return cls(
            article_id=article["article_id"],
            title=article.get("title") or article.get("entry_title") or "",
            text=article.get("text") or "",
            url=article.get("url") or article.get("link"),
            source=article.get("source"),
            published_at=article.get("published_at") or article.get("first_seen_at"),
            language=article.get("language"),
            story_id=article.get("story_id"),
            content_hash=article.get("content_hash"),
            feeds=feeds or [],
            embedding=embedding,
        )


@dataclass(slots=True)
class SearchQuery:
    text: str
    since: datetime | None = None
    until: datetime | None = None
    sources: list[str] = field(default_factory=list)
    story_id: str | None = None
    limit: int = 20
    mode: SearchMode = "keyword"
    by_story: bool = False
    # Query embedding for semantic/hybrid modes (computed by the caller, who owns the model).
    vector: list[float] | None = None


@dataclass(slots=True)
class SearchHit:
    article_id: str
    title: str
    url: str | None
    source: str | None
    published_at: datetime | None
    snippet: str  # plain text; matched terms wrapped in [[ ]] (render-safe: escape, then mark)
    score: float
    story_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "article_id": self.article_id,
            "title": self.title,
            "url": self.url,
            "source": self.source,
            "published_at": self.published_at.isoformat() if self.published_at else None,
            "snippet": self.snippet,
            "score": round(self.score, 6),
            "story_id": self.story_id,
        }


@dataclass(slots=True)
class StoryGroup:
    story_id: str | None
    hits: list[SearchHit]

    def to_json(self) -> dict[str, Any]:
        return {"story_id": self.story_id, "hits": [h.to_json() for h in self.hits]}


@dataclass(slots=True)
class SearchResults:
    hits: list[SearchHit]
    total: int
    groups: list[StoryGroup] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"total": self.total, "hits": [h.to_json() for h in self.hits]}
        if self.groups is not None:
            out["groups"] = [g.to_json() for g in self.groups]
        return out


@runtime_checkable
class SearchBackend(Protocol):
    """What every search backend provides."""

    name: str

    def ensure_ready(self) -> None:
        """Create indexes/tables on first use; raise SearchUnavailable if unreachable."""

    def index(self, documents: list[SearchDocument], *, target: str | None = None) -> int:
        """Insert or replace documents by ``article_id``; idempotent. Returns count indexed.

        ``target`` is a rebuild started by :meth:`begin_rebuild` (None: the live index)."""

    def begin_rebuild(self) -> str | None:
        """Start a full rebuild; returns the target to index into (None: the live index)."""

    def finish_rebuild(self, target: str | None) -> None:
        """Make a rebuild the live index (Elasticsearch: one atomic alias swap)."""

    def abort_rebuild(self, target: str | None) -> None:
        """Throw a failed rebuild away; the live index is left as it was."""

    def delete(self, article_ids: list[str]) -> None: ...

    def search(self, query: SearchQuery) -> SearchResults: ...

    def count(self) -> int: ...

    def clear(self) -> None:
        """Drop every document (used by a full re-index)."""

    def close(self) -> None: ...


def group_by_story(hits: list[SearchHit]) -> list[StoryGroup]:
    """Group hits by story, keeping rank order of each story's best hit."""
    groups: dict[str, StoryGroup] = {}
    for hit in hits:
        key = hit.story_id or f"article:{hit.article_id}"
        if key not in groups:
            groups[key] = StoryGroup(story_id=hit.story_id, hits=[])
        groups[key].hits.append(hit)
    return list(groups.values())


# ---- query text ------------------------------------------------------------------------------

MAX_QUERY_PHRASES = 64  # positive phrases kept from one query (the rest are ignored)
MAX_EXCLUDED_PHRASES = 32
MAX_LIMIT = 1000

_QUERY_ITEM = re.compile(r'(-*)(?:"([^"]*)"?|([^\s"]+))')


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """User query text in a backend-neutral form: AND of clauses, each an OR of phrases.

    A phrase is raw user text with quotes removed (one word or several); each backend quotes
    or analyses it itself, so nothing the user types can reach a query parser as syntax.
    """

    clauses: tuple[tuple[str, ...], ...] = ()
    excluded: tuple[str, ...] = ()
    # Per clause: every alternative was typed in quotes (an exact-text demand).
    quoted: tuple[bool, ...] = ()

    @property
    def empty(self) -> bool:
        """No positive phrase: such a query matches nothing (exclusions alone select nothing)."""
        return not self.clauses

    def phrases(self) -> list[str]:
        return [phrase for clause in self.clauses for phrase in clause]

    def phrase_clauses(self) -> tuple[tuple[str, ...], ...]:
        """The clauses a semantic neighbour must satisfy too: those typed in quotes."""
        flags = self.quoted or (False,) * len(self.clauses)
        return tuple(c for c, q in zip(self.clauses, flags, strict=True) if q)


def _searchable(raw: str) -> bool:
    return any(ch.isalnum() for ch in raw)


def parse_query_text(text: str | None) -> ParsedQuery:
    """Parse ``Qin Gang``, ``"Taiwan Strait"``, ``taiwan -baseball``, ``china OR taiwan``.

    Grammar (everything else is literal text): whitespace-separated words are AND-ed;
    ``"..."`` is a phrase (an unbalanced quote runs to the end); ``OR`` between two items makes
    them alternatives; a leading ``-`` or a preceding ``NOT`` excludes an item; ``AND`` is
    accepted and ignored. Items without a letter or digit (``*``, ``-``, ``()``) are dropped.
    Never raises.
    """
    clauses: list[list[str]] = []
    quoted: list[bool] = []
    excluded: list[str] = []
    pending_or = negate_next = False
    for match in _QUERY_ITEM.finditer(text or ""):
        dashes, quoted_text, bare = match.group(1), match.group(2), match.group(3)
        if bare is not None and not dashes:
            if bare == "OR":
                pending_or = bool(clauses)
                continue
            if bare == "AND":
                continue
            if bare == "NOT":
                negate_next = True
                continue
        quoted_item = quoted_text is not None
        raw = " ".join((quoted_text if quoted_item else bare or "").split())
        if not _searchable(raw):
            continue
        if dashes or negate_next:
            if len(excluded) < MAX_EXCLUDED_PHRASES:
                excluded.append(raw)
        elif sum(len(c) for c in clauses) >= MAX_QUERY_PHRASES:
            pass
        elif pending_or and clauses:
            clauses[-1].append(raw)
            quoted[-1] = quoted[-1] and quoted_item
        else:
            clauses.append([raw])
            quoted.append(quoted_item)
        pending_or = negate_next = False
    return ParsedQuery(tuple(tuple(c) for c in clauses), tuple(excluded), tuple(quoted))


def leading_snippet(text: str, chars: int = 160) -> str:
    """The start of a text, cut at a word, for hits with nothing to highlight."""
    text = " ".join(text.split())
    if len(text) <= chars:
        return text
    cut = text.rfind(" ", 0, chars)
    return text[: cut if cut > chars // 2 else chars] + "…"


def check_query(query: SearchQuery) -> None:
    """Reject queries no backend can answer; raise ValueError with a one-line reason.

    Blank or unsearchable text is *not* an error: it returns empty results.
    """
    if not 1 <= query.limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT} (got {query.limit})")
    if query.mode not in ("keyword", "semantic", "hybrid"):
        raise ValueError(f"unknown search mode {query.mode!r} (keyword, semantic or hybrid)")


# ---- hybrid ranking (both backends) ---------------------------------------------------------

KEYWORD_DEPTH = MAX_LIMIT  # keyword candidates fused: fixed, so ranking never depends on limit
SEMANTIC_DEPTH = 200  # nearest admissible neighbours fused


@dataclass(frozen=True, slots=True)
class HybridPolicy:
    """How the default mode mixes the keyword list with the semantic one.

    ``similarity_floor``: the query-to-article cosine a neighbour needs to join without
    containing every query word; ``semantic_weight``: its share of the combined score.
    """

    similarity_floor: float = SearchSettings.model_fields["similarity_floor"].default
    semantic_weight: float = SearchSettings.model_fields["semantic_weight"].default


@dataclass(frozen=True, slots=True)
class FusedHit:
    article_id: str
    score: float
    keyword_match: bool


def fuse_hybrid(keyword: Sequence[tuple[str, float]], semantic: Sequence[tuple[str, float]],
                policy: HybridPolicy) -> list[FusedHit]:
    """Combine a BM25 list and a cosine list on one scale, best first.

    ``keyword``: (article_id, bm25 > 0) of the documents that satisfy the whole query.
    ``semantic``: (article_id, cosine) of the nearest documents that satisfy its phrases,
    exclusions and filters (every keyword match does, so one missing from this list is no
    closer than its last entry). Each list is min-max normalised onto [0, 1]: BM25 by its
    best score with 0 where a document stops matching, cosine between the list's last and
    best entry; absent = 0. Combined: (1 - w) * keyword + w * semantic. Keyword matches are
    always kept; a semantic-only neighbour only at or above the similarity floor. Both lists
    have fixed depths, so the ranking never depends on how many results are asked for.
    """
    weight = policy.semantic_weight
    top_keyword = max((score for _, score in keyword), default=0.0)
    low = min((cos for _, cos in semantic), default=0.0)
    high = max((cos for _, cos in semantic), default=0.0)
    combined: dict[str, float] = {}
    for doc, score in keyword:
        combined[doc] = (1 - weight) * (score / top_keyword if top_keyword > 0 else 1.0)
    for doc, cos in semantic:
        if doc not in combined and cos < policy.similarity_floor:
            continue
        normalised = (cos - low) / (high - low) if high > low else 1.0
        combined[doc] = combined.get(doc, 0.0) + weight * normalised
    matched = {doc for doc, _ in keyword}
    ranked = sorted(combined.items(), key=lambda item: (-item[1], item[0]))
    return [FusedHit(doc, score, doc in matched) for doc, score in ranked]


_RELATIVE = re.compile(r"^(\d+)\s*([hdwm])$")


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """``7d``, ``12h``, ``2w``, ``1m`` (30 days) or an ISO date/datetime → aware UTC datetime."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(value.lower())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        hours = {"h": 1, "d": 24, "w": 24 * 7, "m": 24 * 30}[unit]
        return now - timedelta(hours=amount * hours)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(
            f"not a date or duration: {value!r} (use e.g. 7d, 12h or 2023-06-18)"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
