"""Search: choose a backend from settings (SQLite FTS5 or Elasticsearch, one contract in
``base``). Keeping it in step with the records is the index stage (``pipeline.index``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.search.base import (
    HybridPolicy,
    SearchBackend,
    SearchDocument,
    SearchHit,
    SearchQuery,
    SearchResults,
    SearchUnavailable,
    StoryGroup,
    group_by_story,
    parse_since,
)
from pipeline.settings import ConfigError, Settings

# Nothing here imports SQLAlchemy or the records: a search from the command line opens only
# the search backend (docs/performance.md, search latency).

__all__ = [
    "SearchBackend",
    "SearchDocument",
    "SearchHit",
    "SearchQuery",
    "SearchResults",
    "SearchUnavailable",
    "StoryGroup",
    "group_by_story",
    "hybrid_policy",
    "open_search",
    "parse_since",
    "sqlite_search_path",
]


def sqlite_search_path(settings: Settings) -> str:
    """Where SQLite search lives: an explicit ``search.sqlite_path``, else the records' own
    SQLite file, else ``<data_dir>/search.db`` (records on PostgreSQL)."""
    if settings.search.sqlite_path:
        return settings.search.sqlite_path
    store_url = settings.store.url
    if store_url.startswith("sqlite:///"):
        return store_url.removeprefix("sqlite:///")
    return str(Path(settings.data_dir) / "search.db")


def hybrid_policy(settings: Settings) -> HybridPolicy:
    """The default mode's mix, from ``search.similarity_floor`` / ``search.semantic_weight``."""
    return HybridPolicy(similarity_floor=settings.search.similarity_floor,
                        semantic_weight=settings.search.semantic_weight)


def open_search(settings: Settings, **backend_options: Any) -> SearchBackend:
    """The configured backend: empty ``search.url`` = SQLite FTS5, http(s):// = Elasticsearch.

    Nothing is contacted here (backends connect on first use). ``backend_options`` go to the
    Elasticsearch backend (e.g. ``node_class`` or ``client`` in tests).
    """
    url = settings.search.url.strip()
    hybrid = hybrid_policy(settings)
    if not url:
        from pipeline.search.sqlite_fts import SqliteSearch

        return SqliteSearch(sqlite_search_path(settings), hybrid=hybrid)
    if url.lower().startswith(("http://", "https://")):
        from pipeline.search.elastic import ElasticSearch

        # dims=None: taken from the first embedded document (the model is never loaded here).
        return ElasticSearch(settings.search, dims=None, hybrid=hybrid, **backend_options)
    raise ConfigError(f"search.url: must be empty (SQLite) or http(s):// (got {url!r})")
