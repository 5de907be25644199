"""One monitoring run: fetch feeds → extract → stories → index → alerts.

Each stage is a plain function over the store (``stage(store, settings, run_id) -> counts``),
so Airflow tasks can run them one by one and the CLI can run them all. Data passes through
the store; stages exchange only ids and counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.hostqueue import HOST_BUDGET, STAGE_BUDGET
from pipeline.settings import Settings
from pipeline.store import Store, open_store, utcnow

log = logging.getLogger(__name__)

STAGES = ("fetch", "extract", "stories", "index", "alerts")
# Fetch outcomes that mean "this feed was read" (or deliberately not needed now).
FEED_SUCCESS = {"ok", "not-modified"}
FEED_SKIPPED = {"skipped-not-due", "skipped-dead", "skipped-disabled", STAGE_BUDGET,
                HOST_BUDGET}
DEFERRED = (STAGE_BUDGET, HOST_BUDGET)  # work a time budget left for the next run
ITEM_ERROR = "item-error"  # one item failed; the rest of its stage went on

ProgressCallback = Callable[[str, int, int | None], None]  # (stage, advance, total)


@dataclass
class RunReport:
    run_id: str
    started_at: datetime
    finished_at: datetime | None = None
    feeds: list[Any] = field(default_factory=list)  # FeedReport per feed
    stages: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # stage -> one-line reason

    @property
    def feeds_ok(self) -> int:
        return sum(1 for f in self.feeds if f.outcome in FEED_SUCCESS)

    @property
    def feeds_failed(self) -> int:
        return sum(1 for f in self.feeds
                   if f.outcome not in FEED_SUCCESS and f.outcome not in FEED_SKIPPED)

    @property
    def all_feeds_failed(self) -> bool:
        """True when feeds were attempted and not one could be fetched (exit non-zero)."""
        attempted = [f for f in self.feeds if f.outcome not in FEED_SKIPPED]
        return bool(attempted) and self.feeds_ok == 0

    @property
    def left_pending(self) -> dict[str, int]:
        """Per stage, the items a time budget left for the next run."""
        return {stage: n for stage, counts in self.stages.items()
                if (n := sum(counts.get(reason, 0) for reason in DEFERRED))}

    @property
    def item_errors(self) -> dict[str, int]:
        """Per stage, the items that failed on their own (the rest of the stage completed)."""
        return {stage: counts[ITEM_ERROR] for stage, counts in self.stages.items()
                if counts.get(ITEM_ERROR)}

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "feeds": {"ok": self.feeds_ok, "failed": self.feeds_failed, "total": len(self.feeds)},
            "stages": self.stages,
            "errors": self.errors,
            "left_pending": self.left_pending,
            "item_errors": self.item_errors,
        }


def stage_fetch(store: Store, settings: Settings, run_id: str, *,
                feed_ids: list[int] | None = None, force: bool = False,
                progress: ProgressCallback | None = None) -> list[Any]:
    from pipeline.feeds import fetch_feeds

    store.sync_feeds(settings.enabled_feeds())
    total = len(feed_ids) if feed_ids is not None else len(settings.enabled_feeds())
    if progress:
        progress("fetch", 0, total)
    return fetch_feeds(
        store, settings, run_id, feed_ids=feed_ids, force=force,
        on_feed_done=(lambda _r: progress("fetch", 1, None)) if progress else None,
    )


def stage_extract(store: Store, settings: Settings, run_id: str, *,
                  progress: ProgressCallback | None = None) -> dict[str, int]:
    from pipeline.articles import extract_pending

    if progress:
        pending = len(store.articles_to_extract(settings.extraction.max_articles_per_run))
        progress("extract", 0, pending)
    return extract_pending(
        store, settings, run_id,
        on_article_done=(lambda _o: progress("extract", 1, None)) if progress else None,
    )


def stage_stories(store: Store, settings: Settings, run_id: str, *,
                  progress: ProgressCallback | None = None) -> dict[str, int]:
    from pipeline.stories import assign_stories

    return assign_stories(store, settings, run_id,
                          progress=(lambda n, total: progress("stories", n, total))
                          if progress else None)


def stage_index(store: Store, settings: Settings, run_id: str, *,
                progress: ProgressCallback | None = None) -> dict[str, int]:
    from pipeline.search import index_pending, open_search

    backend = open_search(settings)
    try:
        return index_pending(store, backend, run_id)
    finally:
        backend.close()


def stage_alerts(store: Store, settings: Settings, run_id: str, *,
                 progress: ProgressCallback | None = None) -> dict[str, int]:
    if not any(w.enabled for w in settings.watches):
        return {}
    from pipeline.alerts.engine import run_alerts

    return run_alerts(store, settings, run_id)


STAGE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "fetch": stage_fetch,
    "extract": stage_extract,
    "stories": stage_stories,
    "index": stage_index,
    "alerts": stage_alerts,
}


def run_once(settings: Settings, *, run_id: str | None = None, stages: tuple[str, ...] = STAGES,
             force: bool = False, progress: ProgressCallback | None = None,
             store: Store | None = None) -> RunReport:
    """Run the pipeline once. A failing stage is reported; the stages after it still run
    on whatever the store holds (records are never lost to a later stage's failure)."""
    own_store = store is None
    store = store or open_store(settings.store.url)
    run_id = store.start_run(run_id)
    report = RunReport(run_id=run_id, started_at=utcnow())
    try:
        for stage in stages:
            try:
                if stage == "fetch":
                    report.feeds = stage_fetch(store, settings, run_id, force=force,
                                               progress=progress)
                else:
                    STAGE_FUNCTIONS[stage](store, settings, run_id, progress=progress)
            except Exception as exc:  # reported, and the run goes on
                log.exception("stage %s failed", stage)
                report.errors[stage] = f"{type(exc).__name__}: {exc}"
                store.count(run_id, stage, "stage-error")
        report.stages = store.run_counts(run_id)
        report.finished_at = utcnow()
        status = "failed" if report.all_feeds_failed or report.errors else "ok"
        store.finish_run(run_id, status, report.summary())
    finally:
        if own_store:
            store.close()
    return report
