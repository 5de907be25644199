"""``newswatch cluster``: the shipped story stage over JSONL records, without a database
of one's own (a throwaway SQLite store), for evaluation and ad-hoc grouping."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.language import detect_language, release_identifier
from pipeline.records import open_store, utcnow
from pipeline.records import stories as story_records
from pipeline.settings import Settings
from pipeline.stories import Progress, assign_stories
from pipeline.story_text import derive_title


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cluster_records(records: list[dict[str, Any]], settings: Settings, *,
                    progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run the shipped embedding + story assignment over JSONL-style records in a throwaway
    store; returns ``{"id", "story_id", "duplicate_of"}`` per record, in input order."""
    from pipeline.embeddings import EmbeddingSpec
    from pipeline.urls import content_hash

    ids = [str(r.get("id")) for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("input ids must be unique")
    with (ThreadPoolExecutor(1, thread_name_prefix="model-load") as loader,
          tempfile.TemporaryDirectory(prefix="newswatch-cluster-") as tmp):
        # The model loads (imports, compiled graph) while languages are identified; a load
        # that fails fails again, with its message, where the stage embeds.
        loader.submit(EmbeddingSpec.of(settings).encoder)
        store = open_store(f"sqlite:///{Path(tmp) / 'cluster.db'}")
        try:
            base = utcnow()
            internal = {rid: f"c{n:08d}" for n, rid in enumerate(ids)}
            articles = []
            for n, record in enumerate(records):
                text = str(record.get("text") or "")
                title = str(record.get("title") or "") or derive_title(text)
                text_source = "feed" if text else "title"  # a headline-only item
                text = text or title
                language = detect_language(title, text, record.get("language")) \
                    if settings.multilingual.enabled else record.get("language")
                articles.append({
                    "article_id": internal[ids[n]], "url": record.get("url"),
                    "source": record.get("source"), "title": title, "text": text,
                    "text_source": text_source,
                    "published_at": _parse_time(record.get("published_at")),
                    "language": language, "content_hash": content_hash(title, text),
                    "version": 1, "extraction_status": "ok",
                    "first_seen_at": base + timedelta(seconds=n), "updated_at": base})
            release_identifier()  # ~75 MB not held beside the embedding model
            story_records.insert_extracted(store, articles)
            assign_stories(store, settings, None, progress=progress)
            rows = story_records.story_of_each_article(store)
        finally:
            store.close()
    external = {v: k for k, v in internal.items()}
    return [{"id": rid, "story_id": rows[internal[rid]].story_id,
             "duplicate_of": external.get(rows[internal[rid]].duplicate_of)} for rid in ids]


