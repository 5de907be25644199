"""What the Airflow tasks call: one small, idempotent function per task (no Airflow here).

Every function takes its configuration (``Config``: settings the DAG layer resolved, or a
config path resolved here by :func:`pipeline.settings.resolve_settings`), opens the store,
runs one pipeline stage through :func:`pipeline.stages.run_stage` (as :mod:`pipeline.run`
does) and returns only ids and counts, so XCom stays small and JSON-serialisable. Records
pass through the store.

Idempotency: the newswatch run id is derived from the Airflow dag run id
(:func:`run_id_for`), so a retried or cleared task resumes the same run, and every stage
processes "what is pending" in the store (due feeds, unextracted articles, unindexed
versions, alerts not yet in the ledger). Running a task twice therefore adds nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.records import Store, open_store
from pipeline.records.feeds import FEED_SUCCESS
from pipeline.run import FEED_SKIPPED, run_summary
from pipeline.settings import Settings, resolve_settings
from pipeline.stages import StageContext, run_stage

log = logging.getLogger(__name__)

SecretResolver = Callable[..., Any]
# Stages after fetch, in order; each records "stage-done" in the run's counts on success.
POST_FETCH_STAGES = ("extract", "stories", "index", "alerts")
DONE = "stage-done"


Config = Settings | str | None


def settings_from(config: Config = None) -> Settings:
    """``config`` itself when it is already settings, else the settings it names
    (:func:`pipeline.settings.resolve_settings`: the path, else ``$NEWSWATCH_CONFIG``)."""
    return config if isinstance(config, Settings) else resolve_settings(config)


def run_id_for(dag_run_id: str) -> str:
    """A newswatch run id that is stable for one Airflow dag run (fits the 40-char column)."""
    return "af-" + hashlib.sha256(dag_run_id.encode("utf-8")).hexdigest()[:32]


@contextmanager
def _opened(config: Config, run_id: str | None = None
            ) -> Iterator[tuple[Settings, Store]]:
    settings = settings_from(config)
    store = open_store(settings.store.url)
    try:
        if run_id is not None:
            store.start_run(run_id)  # resumes the run when it already exists
        yield settings, store
    finally:
        store.close()


def plan_feed_batches(config: Config, max_batches: int = 8) -> list[list[int]]:
    """Sync the configured feeds into the store and split their ids into host-grouped
    batches (one mapped fetch task each); ``[]`` when no feed is configured."""
    from pipeline.fetch import group_feeds_by_host

    with _opened(config) as (settings, store):
        enabled = settings.enabled_feeds()
        if not enabled:
            return []
        feeds = store.sync_feeds(enabled)
        return group_feeds_by_host(feeds, max_batches)


def fetch_batch(config: Config, run_id: str, feed_ids: list[int]) -> dict[str, int]:
    """Fetch one batch of feeds. Feeds that are not due are skipped, so a rerun of the same
    data interval fetches nothing twice. A failing feed is recorded on the feed (with its own
    backoff) and counted, not raised: retrying the task could not fetch it sooner."""
    with _opened(config, run_id) as (settings, store):
        reports = run_stage("fetch", StageContext(store, settings, run_id,
                                                  options={"feed_ids": list(feed_ids)}))
    outcomes = Counter(r.outcome for r in reports)
    failed = sum(n for o, n in outcomes.items() if o not in FEED_SUCCESS | FEED_SKIPPED)
    if failed:
        log.warning("fetch: %d of %d feeds failed: %s", failed, len(reports), dict(outcomes))
    return {"feeds": len(reports), "failed": failed,
            "new": sum(r.new for r in reports), "updated": sum(r.updated for r in reports),
            **{f"outcome:{o}": n for o, n in sorted(outcomes.items())}}


def _stage(stage: str, config: Config, run_id: str, **options: Any) -> dict[str, Any]:
    with _opened(config, run_id) as (settings, store):
        result = run_stage(stage, StageContext(store, settings, run_id, options=options)) or {}
        store.count(run_id, stage, DONE)
    return {str(k): v for k, v in dict(result).items() if isinstance(v, int | float | str)}


def extract(config: Config, run_id: str) -> dict[str, Any]:
    """Extract the text of articles still pending (bounded per run by the settings)."""
    return _stage("extract", config, run_id)


def stories(config: Config, run_id: str) -> dict[str, Any]:
    """Embed new article versions and assign them to stories."""
    return _stage("stories", config, run_id)


def index(config: Config, run_id: str) -> dict[str, Any]:
    """Bring the search index up to date with the store (only what changed)."""
    return _stage("index", config, run_id)


def alerts(config: Config, run_id: str,
           resolver: SecretResolver | None = None) -> dict[str, Any]:
    """Decide and deliver alerts; the alert ledger makes each one go out once."""
    return _stage("alerts", config, run_id, resolver=resolver)


def finish(config: Config, run_id: str) -> dict[str, Any]:
    """Record the run's status and summary (:func:`pipeline.run.run_summary`, as a CLI run
    records it); status is ``failed`` when a stage did not complete or every attempted feed
    failed."""
    with _opened(config, run_id) as (_settings, store):
        counts = store.run_counts(run_id)
        missing = [s for s in POST_FETCH_STAGES if DONE not in counts.get(s, {})]
        summary = run_summary(run_id, counts, missing=missing)
        status = "failed" if missing or summary["all_feeds_failed"] else "ok"
        store.finish_run(run_id, status, summary)
    return {"status": status, "missing": missing,
            "all_feeds_failed": summary["all_feeds_failed"]}


def due_digests(config: Config) -> list[str]:
    """Names of enabled watches that send digests (send_digest is once per window)."""
    settings = settings_from(config)
    return [w.name for w in settings.watches if w.enabled and w.mode == "digest"]


def digest(config: Config, watch: str,
           resolver: SecretResolver | None = None) -> dict[str, int]:
    """Send ``watch``'s digest for the latest window that has begun, exactly once."""
    from pipeline.alerts.engine import send_digest

    with _opened(config) as (settings, store):
        result = send_digest(store, settings, watch, resolver=resolver)
    return {str(k): int(v) for k, v in dict(result).items()}


__all__ = [
    "alerts", "digest", "due_digests", "extract", "fetch_batch", "finish", "index",
    "plan_feed_batches", "run_id_for", "settings_from", "stories",
]
