"""``newswatch cluster``: the shipped story stage over JSONL records, without a database
of one's own (a throwaway SQLite store), for evaluation and ad-hoc grouping."""

from __future__ import annotations

import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.language import detect_language, identifier_held
from pipeline.records import open_store, utcnow
from pipeline.records import stories as story_records
from pipeline.settings import Settings
from pipeline.stories import Progress, TextFeatures, assign_stories, embed_pending
from pipeline.story_text import derive_title

# Records identified and stored per step: embed_pending's batch, so the model sees the same
# batches of texts as when the stage embeds the whole input in one call.
CHUNK = 256


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _article(record: dict[str, Any], article_id: str, first_seen: datetime,
             updated: datetime, settings: Settings) -> dict[str, Any]:
    """The store's article row for one input record (its language identified here)."""
    from pipeline.urls import content_hash

    text = str(record.get("text") or "")
    title = str(record.get("title") or "") or derive_title(text)
    text_source = "feed" if text else "title"  # a headline-only item
    text = text or title
    language = detect_language(title, text, record.get("language")) \
        if settings.multilingual.enabled else record.get("language")
    return {"article_id": article_id, "url": record.get("url"), "source": record.get("source"),
            "title": title, "text": text, "text_source": text_source,
            "published_at": _parse_time(record.get("published_at")), "language": language,
            "content_hash": content_hash(title, text), "version": 1,
            "extraction_status": "ok", "first_seen_at": first_seen, "updated_at": updated}


def _passes_only(progress: Progress | None) -> Progress | None:
    """``progress`` without the empty passes of stages that find nothing left to embed."""
    if progress is None:
        return None
    return lambda advance, total: None if total == 0 and not advance else \
        progress(advance, total)


def cluster_records(records: list[dict[str, Any]], settings: Settings, *,
                    progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run the shipped embedding + story assignment over JSONL-style records in a throwaway
    store; returns ``{"id", "story_id", "duplicate_of"}`` per record, in input order.

    Pipelined by :data:`CHUNK` records: while the model embeds one chunk (on a worker; the
    engine releases the GIL), this thread identifies the next chunk's languages, so the two
    costs overlap instead of adding up. The stage then finds every MiniLM vector made and
    only assigns (the other languages' multilingual pass runs there, as in a run)."""
    from pipeline.embeddings import EmbeddingSpec

    ids = [str(r.get("id")) for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("input ids must be unique")
    if progress:
        progress(0, len(records))
    advance = (lambda n, _total: progress(n, None)) if progress else None
    with (ThreadPoolExecutor(1, thread_name_prefix="model-load") as loader,
          ThreadPoolExecutor(1, thread_name_prefix="embed-chunk") as embedder,
          tempfile.TemporaryDirectory(prefix="newswatch-cluster-") as tmp):
        # The model loads (imports, compiled graph) while the first chunk's languages are
        # identified; a load that fails fails again, with its message, where it embeds.
        spec = EmbeddingSpec.of(settings)
        loader.submit(spec.encoder)
        store = open_store(f"sqlite:///{Path(tmp) / 'cluster.db'}")
        try:
            base = utcnow()
            internal = {rid: f"c{n:08d}" for n, rid in enumerate(ids)}
            features = TextFeatures()
            embedding: Future[int] | None = None
            # The identifier is memory-mapped from its unpacked copy beside the models, and
            # dropped once the last chunk is identified (not held beside the model after).
            with identifier_held(spec.cache_dir):
                for start in range(0, len(records), CHUNK):
                    articles = [_article(records[n], internal[ids[n]],
                                         base + timedelta(seconds=n), base, settings)
                                for n in range(start, min(start + CHUNK, len(records)))]
                    if embedding is not None:
                        embedding.result()  # one writer at a time on the store
                    story_records.insert_extracted(store, articles)
                    embedding = embedder.submit(embed_pending, store, settings, None,
                                                advance, features=features)
            if embedding is not None:
                embedding.result()
            assign_stories(store, settings, None, progress=_passes_only(progress),
                           features=features)
            rows = story_records.story_of_each_article(store)
        finally:
            store.close()
    external = {v: k for k, v in internal.items()}
    return [{"id": rid, "story_id": rows[internal[rid]].story_id,
             "duplicate_of": external.get(rows[internal[rid]].duplicate_of)} for rid in ids]
