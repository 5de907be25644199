"""One monitoring run: fetch feeds → extract → stories → index → alerts.

Each stage is a module with one ``run(context)`` (the contract in :mod:`pipeline.stages`), so
Airflow tasks can run them one by one and the CLI can run them all. Data passes through the
store; stages exchange only ids and counts.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from pipeline.embeddings import release_encoders
from pipeline.hostqueue import HOST_BUDGET, STAGE_BUDGET
from pipeline.memory import limit_malloc_arenas, return_free_memory
from pipeline.records import Store, open_store, utcnow
from pipeline.records.feeds import FEED_SUCCESS
from pipeline.settings import Settings
from pipeline.stages import STAGES, ProgressCallback, StageContext, run_stage
from pipeline.story_text import forget_words

log = logging.getLogger(__name__)

# Fetch outcomes of a feed deliberately not read now (FEED_SUCCESS: it was read).
FEED_SKIPPED = {"skipped-not-due", "skipped-dead", "skipped-disabled", STAGE_BUDGET,
                HOST_BUDGET}
RUN_BUDGET = "deferred-run-budget"  # articles the run's time budget left for the next run
DEFERRED = (STAGE_BUDGET, HOST_BUDGET, RUN_BUDGET)  # work a time budget left for the next run
ITEM_ERROR = "item-error"  # one item failed; the rest of its stage went on

@dataclass
class RunReport:
    run_id: str
    started_at: datetime
    finished_at: datetime | None = None
    feeds: list[Any] = field(default_factory=list)  # FeedReport per feed
    stages: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # stage -> one-line reason
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds, all chunks

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
        return run_summary(self.run_id, self.stages, errors=self.errors, timings=self.timings)


def run_summary(run_id: str, stages: dict[str, dict[str, int]], *,
                errors: dict[str, str] | None = None, timings: dict[str, float] | None = None,
                missing: list[str] | None = None) -> dict[str, Any]:
    """The one shape of ``runs.summary``, from the run's outcome counts, whether the CLI ran
    every stage in one process (:func:`run_once`) or Airflow ran them as tasks
    (``orchestration.finish``, which names the stages that never completed in ``missing``).
    Feeds are counted from the fetch outcomes: each feed is counted once per run."""
    fetch = stages.get("fetch", {})
    ok = sum(n for outcome, n in fetch.items() if outcome in FEED_SUCCESS)
    attempted = sum(n for outcome, n in fetch.items() if outcome not in FEED_SKIPPED)
    return {
        "run_id": run_id,
        "feeds": {"ok": ok, "failed": attempted - ok, "total": sum(fetch.values())},
        "all_feeds_failed": attempted > 0 and ok == 0,
        "stages": stages,
        "errors": dict(errors or {}),
        "missing": list(missing or []),
        "timings": {stage: round(s, 3) for stage, s in (timings or {}).items()},
        "left_pending": {stage: n for stage, counts in stages.items()
                         if (n := sum(counts.get(reason, 0) for reason in DEFERRED))},
        "item_errors": {stage: counts[ITEM_ERROR] for stage, counts in stages.items()
                        if counts.get(ITEM_ERROR)},
    }


def run_once(settings: Settings, *, run_id: str | None = None, stages: tuple[str, ...] = STAGES,
             force: bool = False, progress: ProgressCallback | None = None,
             store: Store | None = None) -> RunReport:
    """Run the pipeline once: fetch, then the backlog in chunks.

    Each chunk (``run.chunk_size`` articles) is extracted, embedded and assigned to stories,
    indexed and scored, and committed before the next one starts, so a run stopped at any
    point keeps every finished chunk and the next run resumes with what is still pending.
    A failing stage is reported and ends the chunk loop; the stages after it still run on
    whatever the store holds (records are never lost to a later stage's failure). Runs left
    ``running`` by a process that died are marked ``abandoned`` first.
    """
    limit_malloc_arenas()
    own_store = store is None
    store = store or open_store(settings.store.url)
    try:
        mark_abandoned_runs(store, settings.run.stale_after_s)
        run_id = store.start_run(run_id)
        heartbeat(store, run_id)
        report = RunReport(run_id=run_id, started_at=utcnow())
        if "fetch" in stages:
            fetch = StageContext(store, settings, run_id, progress, {"force": force})
            _guarded(report, store, "fetch",
                     lambda: setattr(report, "feeds", run_stage("fetch", fetch)))
        chunked = tuple(stage for stage in stages if stage != "fetch")
        return_free_memory()
        if chunked:
            run_chunks(store, settings, run_id, chunked, report, progress)
        report.stages = store.run_counts(run_id)
        report.finished_at = utcnow()
        status = "failed" if report.all_feeds_failed or report.errors else "ok"
        store.finish_run(run_id, status, report.summary())
    finally:
        if own_store:
            store.close()
    return report


def _guarded(report: RunReport, store: Store, stage: str, work: Callable[[], Any]) -> bool:
    """Run one stage (timed); a failure is logged, counted and reported, never raised."""
    started = time.perf_counter()
    try:
        work()
        return True
    except Exception as exc:  # reported, and the run goes on
        log.exception("stage %s failed", stage)
        report.errors[stage] = f"{type(exc).__name__}: {exc}"
        store.count(report.run_id, stage, "stage-error")
        return False
    finally:
        report.timings[stage] = report.timings.get(stage, 0.0) + time.perf_counter() - started


def run_chunks(store: Store, settings: Settings, run_id: str, stages: tuple[str, ...],
               report: RunReport, progress: ProgressCallback | None = None) -> int:
    """Work through the extraction backlog chunk by chunk; returns the chunks done.

    Page downloads are capped per run (``extraction.max_articles_per_run``); articles that
    take their feed text are not, so a feed-text-only backlog finishes in one run.
    """
    conf = settings.extraction
    deadline = time.monotonic() + settings.run.budget_s
    download_budget = conf.max_articles_per_run if conf.fetch_pages else None
    pending = store.count_articles_to_extract(conf.max_attempts) if "extract" in stages else 0
    planned = max(1, -(-min(pending, download_budget if download_budget is not None
                            else pending) // settings.run.chunk_size))
    if progress:
        progress("chunk", 0, planned)
        if "extract" in stages:
            progress("extract", 0, pending)
    chunk = 0
    while True:
        chunk += 1
        extracted: dict[str, int] = {}
        processed = 0

        def article_done(_outcome: Any) -> None:
            nonlocal processed
            processed += 1
            if progress:
                progress("extract", 1, None)

        healthy = True
        for stage in stages:
            if stage == "extract":
                work = partial(_extract_into, extracted, StageContext(
                    store, settings, run_id, progress,
                    {"limit": settings.run.chunk_size, "page_budget": download_budget,
                     "on_article_done": article_done}))
            else:
                work = partial(run_stage, stage, StageContext(store, settings, run_id,
                                                              progress))
            healthy = _guarded(report, store, stage, work) and healthy
        heartbeat(store, run_id, chunk)
        store.count(run_id, "run", "chunks")
        # The next chunk's extraction loads the language identifier: not beside MiniLM, which
        # the stories stage loads again (~1 s from its compiled cache) when it needs it.
        release_encoders()
        forget_words()
        return_free_memory()
        if progress:
            progress("chunk", 1, max(planned, chunk))
        if download_budget is not None:
            download_budget -= extracted.get("downloaded", 0)
        # A short chunk means the backlog is drained. A failed stage ends the loop: the next
        # run retries rather than repeating the error.
        if (not healthy or "extract" not in stages or processed < settings.run.chunk_size
                or (download_budget is not None and download_budget <= 0)):
            return chunk
        if time.monotonic() >= deadline:
            store.count(run_id, "run", RUN_BUDGET,
                        store.count_articles_to_extract(conf.max_attempts))
            log.warning("run %s: time budget (run.budget_s=%ss) spent after %d chunks; the "
                        "rest of the backlog waits for the next run", run_id,
                        settings.run.budget_s, chunk)
            return chunk


def _extract_into(counts: dict[str, int], context: StageContext) -> None:
    """One chunk of the extraction stage; its outcome counts land in ``counts``."""
    counts.update(run_stage("extract", context))


def heartbeat(store: Store, run_id: str, chunk: int = 0) -> None:
    """Record that this run is alive (and who runs it), for :func:`mark_abandoned_runs`."""
    store.update_run_summary(run_id, {"owner": process_identity(), "chunk": chunk,
                                      "heartbeat_at": utcnow().isoformat()})


def process_identity() -> dict[str, Any]:
    """Host, pid and process start time: enough to tell later whether this process is gone
    (the start time guards against a reused pid)."""
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(),
            "created": psutil.Process().create_time()}


def _process_gone(owner: dict[str, Any]) -> bool:
    import psutil

    if owner.get("host") != socket.gethostname() or "pid" not in owner:
        return False  # another machine's run: only its heartbeat can tell
    try:
        return abs(psutil.Process(int(owner["pid"])).create_time()
                   - float(owner.get("created", 0))) > 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return True


def mark_abandoned_runs(store: Store, stale_after_s: float) -> list[str]:
    """Mark ``abandoned`` (with the time) every run still ``running`` whose process on this
    host is gone, or whose last heartbeat (or start) is older than ``stale_after_s``."""
    now = utcnow()
    abandoned = []
    for run in store.running_runs():
        summary = run.get("summary") or {}
        owner = summary.get("owner") or {}
        try:
            seen = datetime.fromisoformat(summary["heartbeat_at"])
        except (KeyError, TypeError, ValueError):
            seen = run["started_at"]
        if _process_gone(owner) or (now - seen).total_seconds() > stale_after_s:
            store.finish_run(run["run_id"], "abandoned", {
                **summary, "abandoned_at": now.isoformat(),
                "reason": "its process is gone" if _process_gone(owner)
                else f"no progress for {int((now - seen).total_seconds())} s"})
            log.warning("run %s was left running: marked abandoned", run["run_id"])
            abandoned.append(run["run_id"])
    return abandoned
