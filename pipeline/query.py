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
    if story_id:  # a story consolidation folded into another: search where its articles are
        story_id = current_story_id(settings, story_id)
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


def current_story_id(settings: Settings, story_id: str) -> str:
    """The story that holds ``story_id``'s articles now (itself unless consolidation folded
    it into another); the id as given when the records cannot say."""
    from pipeline.records import open_store
    from pipeline.records.stories import resolve_story_id

    try:
        store = open_store(settings.store.url)
    except Exception as exc:  # search still answers for the id as given
        log.warning("records unavailable, story id %s not resolved: %s", story_id, exc)
        return story_id
    try:
        return resolve_story_id(store, story_id) or story_id
    finally:
        store.close()


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
