"""Search as users ask for it: parse their filters, embed the query, pick the backend."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from pipeline.search import open_search
from pipeline.search.base import SearchBackend, SearchQuery, SearchResults, parse_since
from pipeline.settings import Settings

log = logging.getLogger(__name__)
MODES = ("hybrid", "keyword", "semantic")


def run_search(settings: Settings, text: str, *, since: str | None = None,
               until: str | None = None, sources: list[str] | None = None,
               story_id: str | None = None, limit: int = 20, by_story: bool = False,
               mode: str = "hybrid") -> SearchResults:
    """Run one search. Raises ValueError with a user-facing message on bad input."""
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r} (use one of: {', '.join(MODES)})")
    if not text.strip():
        raise ValueError("empty query")
    query = SearchQuery(text=text, since=parse_since(since), until=parse_since(until),
                        sources=sources or [], story_id=story_id, limit=limit,
                        mode=mode, by_story=by_story)  # type: ignore[arg-type]
    if mode == "keyword":
        return _search(settings, query)
    # The model loads (mostly native code, off the GIL) on a second core while the backend
    # opens: a one-off command pays max(load, open) instead of their sum.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-query") as pool:
        vector = pool.submit(embed_query, settings, text)
        backend = open_search(settings)
        query.vector = vector.result()
    return _search(settings, query, backend)


def _search(settings: Settings, query: SearchQuery,
            backend: SearchBackend | None = None) -> SearchResults:
    backend = backend or open_search(settings)
    try:
        return backend.search(query)
    finally:
        backend.close()


def embed_query(settings: Settings, text: str) -> list[float] | None:
    """The query's embedding, or None (then hybrid search degrades to keyword search)."""
    try:
        from pipeline.embeddings import encode_for

        return encode_for(settings, [text])[0].tolist()
    except Exception as exc:  # a missing model must not break keyword search
        log.warning("query embedding unavailable, using keyword search: %s", exc)
        return None
