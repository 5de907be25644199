"""The index stage: keep the search backend in step with the records.

``index_pending`` sends the articles whose text or story changed since the index last received
them (``Store.articles_needing_index``) and marks them only after the backend accepted them,
so an outage costs nothing: the next run catches up. ``reindex`` rebuilds from scratch.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline import search
from pipeline.search.base import (
    SearchBackend,
    SearchDocument,
    SearchMisconfigured,
    SearchUnavailable,
)
from pipeline.stages import StageContext

# SQLAlchemy and the records are imported by the functions that use them, not here.

if TYPE_CHECKING:
    from pipeline.records import Store

log = logging.getLogger(__name__)

STAGE = "index"
ITEM_ERROR = "item-error"  # this article's document raised; the rest of its batch went on

EmbeddingsLookup = Callable[[list[dict[str, Any]]], dict[str, list[float]]]


def _not_the_item() -> tuple[type[BaseException], ...]:
    """Failures that are no document's fault: an outage, a misconfiguration, a database in
    trouble."""
    from sqlalchemy.exc import OperationalError

    return (SearchUnavailable, SearchMisconfigured, sqlite3.OperationalError, OperationalError)


def current_embeddings(store: Store, articles: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Embeddings of each article's current version (``article_versions.embedding``)."""
    from pipeline.embeddings import unpack_vector
    from pipeline.records.articles import article_embeddings

    wanted = {a["article_id"]: a["version"] for a in articles if a.get("version")}
    if not wanted:
        return {}
    return {article_id: unpack_vector(blob).tolist()
            for article_id, blob in article_embeddings(store, wanted).items()}


def _documents(store: Store, articles: list[dict[str, Any]],
               embeddings_lookup: EmbeddingsLookup | None) -> list[SearchDocument]:
    from pipeline.records.articles import feeds_of

    lookup = embeddings_lookup or (lambda rows: current_embeddings(store, rows))
    embeddings = lookup(articles)
    feeds = feeds_of(store, [a["article_id"] for a in articles])
    return [SearchDocument.from_article(a, embedding=embeddings.get(a["article_id"]),
                                        feeds=feeds.get(a["article_id"]))
            for a in articles]


def _index_stories(store: Store, backend: SearchBackend,
                   articles: list[dict[str, Any]]) -> int:
    """Upsert the stories of a batch's articles where the backend keeps a stories index.

    An article is re-indexed whenever its story changes, so the stories of each batch are
    exactly the ones whose documents may be stale (Elasticsearch's ``newswatch-stories``);
    the documents of stories folded into them (consolidation) are deleted.
    """
    index_stories = getattr(backend, "index_stories", None)
    story_ids = sorted({a["story_id"] for a in articles if a.get("story_id")})
    if index_stories is None or not story_ids:
        return 0
    from pipeline.records.stories import merged_into_each, stories_by_id

    rows = stories_by_id(store, story_ids, ("story_id", "title", "first_seen_at",
                                            "last_seen_at", "article_count", "sources"))
    indexed = int(index_stories(list(rows.values())))
    # A story folded into one of these lost its articles to it: its document goes.
    folded = sorted(f for ids in merged_into_each(store, story_ids).values() for f in ids)
    delete_stories = getattr(backend, "delete_stories", None)
    if folded and delete_stories is not None:
        delete_stories(folded)
    return indexed


def _index_batches(store: Store, backend: SearchBackend, counts: dict[str, int], *,
                   batch: int, embeddings_lookup: EmbeddingsLookup | None,
                   on_batch: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Index every pending article, batch by batch, adding to ``counts``.

    Raises SearchUnavailable mid-way; batches done before stay marked.
    """
    from pipeline.records import index_fingerprint

    seen: set[tuple[str, str]] = set()
    while True:
        articles = store.articles_needing_index(limit=batch)
        keys = {(a["article_id"], index_fingerprint(a)) for a in articles}
        if not articles or keys <= seen:  # nothing new (guards against a marking race)
            return counts
        seen |= keys
        accepted, failed = _index_isolated(store, backend, articles, embeddings_lookup)
        sent = [a for a in articles if a["article_id"] not in failed]
        _index_stories(store, backend, sent)
        # Rejected and failed documents are marked too: resending the same version cannot
        # fix them. A new version (or story) of the article is sent again.
        store.mark_indexed(articles)
        counts["indexed"] += accepted
        counts["rejected"] += len(sent) - accepted
        counts[ITEM_ERROR] += len(failed)
        counts["batches"] += 1
        if on_batch is not None:
            on_batch(counts["indexed"], counts["rejected"])


def _index_isolated(store: Store, backend: SearchBackend, articles: list[dict[str, Any]],
                    embeddings_lookup: EmbeddingsLookup | None) -> tuple[int, dict[str, str]]:
    """Index a batch in one call; should that raise, each article on its own, so that one
    document the backend cannot take costs only itself.

    Returns (documents accepted, {article_id: error} of those that raised). An outage, a
    misconfiguration or a database in trouble is no item's fault: it raises, as does an
    error every article of a fallback shares (nothing is marked, the next run retries).
    """
    not_the_item = _not_the_item()
    try:
        return backend.index(_documents(store, articles, embeddings_lookup)), {}
    except not_the_item:
        raise
    except Exception as exc:
        log.warning("index: a batch of %d failed (%s: %s); indexing its articles one by one",
                    len(articles), type(exc).__name__, exc)
    accepted = 0
    failed: dict[str, str] = {}
    first_error: Exception | None = None
    for article in articles:
        try:
            accepted += backend.index(_documents(store, [article], embeddings_lookup))
        except not_the_item:
            raise
        except Exception as exc:
            first_error = first_error or exc
            failed[article["article_id"]] = f"{type(exc).__name__}: {exc}"[:500]
    if len(articles) > 1 and len(failed) == len(articles) and first_error is not None:
        raise first_error  # every article fails alike: the backend's fault, not theirs
    for article_id, error in failed.items():
        log.error("index: article %s not indexed (item-error): %s", article_id, error)
    return accepted, failed


def index_pending(store: Store, backend: SearchBackend, run_id: str | None, *,
                  batch: int = 500,
                  embeddings_lookup: EmbeddingsLookup | None = None) -> dict[str, int]:
    """Bring the index up to date with the records; never raises SearchUnavailable.

    Raises SearchMisconfigured (refused credentials, a live mapping that cannot hold the
    documents): retrying cannot fix those, so the stage fails with the reason, and the batch
    stays un-marked for the run after the fix.

    Returns ``{"indexed", "rejected", "item-error", "batches", "unavailable"}`` and counts the
    same outcomes under stage ``index`` for ``run_id``. When the backend is unavailable the
    current batch stays un-marked and the next call picks it up again (upserts make that
    harmless). An article whose document raises is ``item-error`` (logged with its error and
    marked: it is sent again once its text or story changes); the rest of its batch is indexed.
    """
    counts = {"indexed": 0, "rejected": 0, ITEM_ERROR: 0, "batches": 0, "unavailable": 0}
    try:
        _index_batches(store, backend, counts, batch=batch,
                       embeddings_lookup=embeddings_lookup)
    except SearchUnavailable as exc:
        log.warning("search unavailable, indexing will catch up next run: %s", exc)
        counts["unavailable"] = 1
    if run_id is not None:
        for outcome in ("indexed", "rejected", ITEM_ERROR, "unavailable"):
            store.count(run_id, STAGE, outcome, counts[outcome])
    return counts


def reindex(store: Store, backend: SearchBackend,
            progress: Callable[[int, int], None] | None = None, *,
            batch: int = 500) -> dict[str, int]:
    """Rebuild the index from the records. Raises SearchUnavailable (a user-run command).

    Every article is written into a fresh target (Elasticsearch: a new backing index, while
    searches and writes keep using the live one), which then replaces the live index in one
    step. Only after that are the records told what the index holds: in one transaction every
    fingerprint is cleared and those of the documents sent are set, so anything written
    elsewhere meanwhile (a concurrent run into the old index) is sent again by the next run.
    A failure throws the unfinished target away and leaves the live index and the records
    as they were.
    """
    from pipeline.records.articles import replace_index_marks

    counts = {"indexed": 0, "rejected": 0, "batches": 0}
    sent: list[dict[str, Any]] = []
    target = backend.begin_rebuild()
    try:
        rows: list[dict[str, Any]] = []
        for article in store.iter_articles(batch=batch):
            rows.append(article)
            if len(rows) >= batch:
                _rebuild_batch(store, backend, target, rows, counts, sent, progress)
                rows = []
        if rows:
            _rebuild_batch(store, backend, target, rows, counts, sent, progress)
        backend.finish_rebuild(target)
    except BaseException:
        backend.abort_rebuild(target)
        raise
    replace_index_marks(store, sent)
    return counts


def _rebuild_batch(store: Store, backend: SearchBackend, target: str | None,
                   articles: list[dict[str, Any]], counts: dict[str, int],
                   sent: list[dict[str, Any]],
                   progress: Callable[[int, int], None] | None) -> None:
    documents = _documents(store, articles, None)
    accepted = (backend.index(documents, target=target) if target is not None
                else backend.index(documents))
    _index_stories(store, backend, articles)
    sent.extend({"article_id": a["article_id"], "content_hash": a.get("content_hash"),
                 "story_id": a.get("story_id")} for a in articles)
    counts["indexed"] += accepted
    counts["rejected"] += len(articles) - accepted
    counts["batches"] += 1
    if progress is not None:
        progress(counts["indexed"], counts["rejected"])


# What the index stage counts under "index".
OUTCOMES = ("indexed", "rejected", "batches", "unavailable", ITEM_ERROR)


def run(context: StageContext) -> dict[str, int]:
    """The index stage: send what changed to the configured backend."""
    backend = search.open_search(context.settings)
    try:
        return index_pending(context.store, backend, context.run_id)
    finally:
        backend.close()
