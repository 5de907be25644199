"""The feed stage: fetch each due feed, store its entries, and schedule its next fetch.

One orchestrator per feed, as in Miniflux: :func:`fetch_feed` decides whether the feed is due,
sends a conditional GET, parses, upserts entries and records the outcome on the feed (state,
counters, next_fetch_at). :func:`fetch_feeds` runs it for many feeds in a thread pool; the
Fetcher's per-host slots keep that polite. One broken feed never stops a run.

Scheduling (``next_fetch_at``):

* success (``ok``, ``not-modified``): now + max(ttl, min_interval_s), where ttl is the larger
  of ``Cache-Control: max-age`` and RSS ``<ttl>``, capped at ``max_retry_after_s``;
* ``rate-limited`` with Retry-After: now + max(Retry-After, min_interval_s); the server
  scheduled us, so it is not a failure (and does not reset the failure count either);
* any other failure: consecutive_failures += 1 and
  now + min(backoff_max_s, backoff_base_s * 2**(n-1)) * uniform(0.8, 1.2); after
  ``dead_after_failures`` failures in a row the feed is marked dead and skipped until
  ``Store.enable_feed(url)``.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.feedparse import FeedParseError, parse_feed
from pipeline.fetcher import OUTCOMES as FETCH_OUTCOMES
from pipeline.fetcher import Fetcher, host_key
from pipeline.hostqueue import HOST_BUDGET, STAGE_BUDGET, Deferred, run_per_host
from pipeline.models import ParsedFeed
from pipeline.records import FeedRow, Store
from pipeline.records.feeds import FEED_SUCCESS
from pipeline.settings import FetchSettings, Settings
from pipeline.stages import StageContext

logger = logging.getLogger(__name__)

FEED_ACCEPT = ("application/rss+xml, application/atom+xml, application/feed+json, "
               "application/rdf+xml;q=0.9, application/xml;q=0.9, text/xml;q=0.9, "
               "application/json;q=0.8, */*;q=0.5")
STAGE = "fetch"
SKIP_OUTCOMES = frozenset({"skipped-dead", "skipped-disabled", "skipped-not-due"})
# Not fetched this run because a time budget was spent: due again on the next run.
DEFERRED_OUTCOMES = frozenset({STAGE_BUDGET, HOST_BUDGET})
_MAX_ERROR_CHARS = 1000
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


@dataclass(slots=True)
class FeedReport:
    """What happened to one feed in one run (for logs, progress bars and run summaries)."""

    feed_id: int
    url: str
    name: str
    outcome: str
    status: int | None = None
    error: str | None = None
    entries: int = 0  # entries in the fetched feed
    new: int = 0  # articles seen for the first time
    updated: int = 0  # articles whose feed text changed
    next_fetch_at: datetime | None = None
    died: bool = False  # this fetch made the feed dead
    item_errors: int = 0  # entries that could not be stored (the others were)


# ---- scheduling helpers --------------------------------------------------------------------


def backoff_delay_s(failures: int, fetch: FetchSettings, rng: random.Random | None = None
                    ) -> float:
    """Delay before retrying after ``failures`` consecutive failures (jittered so feeds that
    failed together, e.g. one host down, do not retry in lockstep)."""
    exponent = min(max(failures, 1) - 1, 60)
    delay = min(fetch.backoff_max_s, fetch.backoff_base_s * 2.0 ** exponent)
    return max(delay * (rng or random).uniform(0.8, 1.2), fetch.min_interval_s)


def cache_max_age_s(headers: dict[str, str]) -> float | None:
    """``Cache-Control: max-age`` in seconds (0 for no-cache/no-store), or None."""
    value = headers.get("cache-control", "")
    if not value:
        return None
    if re.search(r"no-cache|no-store", value, re.IGNORECASE):
        return 0.0
    match = _MAX_AGE.search(value)
    return float(match.group(1)) if match else None


def _truncate(text: str | None) -> str | None:
    return text[:_MAX_ERROR_CHARS] if text else text


def _wants_validators(feed: FeedRow, fetch: FetchSettings) -> bool:
    """Every ``revalidate_every``-th fetch is unconditional, in case a server's ETag sticks."""
    return not (fetch.revalidate_every and (feed.fetch_count + 1) % fetch.revalidate_every == 0)


# ---- one feed ------------------------------------------------------------------------------


class UnchangedFeeds:
    """The bookkeeping of feeds that answered 304, written in batches of :attr:`size`.

    A 304 changes only the feed's check time, validators and health counters (no entries):
    one transaction per feed made the fetch stage of a mostly-unchanged run wait on the
    store, not the network. A run stopped before a batch is written loses only that: those
    feeds are asked again next time (another 304). Thread-safe; :meth:`flush` writes the rest.
    """

    size = 100

    def __init__(self, store: Store, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self._pending: list[tuple[int, str, datetime, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def add(self, feed_id: int, outcome: str, at: datetime, values: dict[str, Any]) -> None:
        with self._lock:
            self._pending.append((feed_id, outcome, at, values))
            batch = self._take() if len(self._pending) >= self.size else []
        self._write(batch)

    def flush(self) -> None:
        with self._lock:
            batch = self._take()
        self._write(batch)

    def _take(self) -> list[tuple[int, str, datetime, dict[str, Any]]]:
        batch, self._pending = self._pending, []
        return batch

    def _write(self, batch: list[tuple[int, str, datetime, dict[str, Any]]]) -> None:
        if not batch:
            return
        try:
            self.store.record_fetches(self.run_id, batch)
        except Exception:  # one feed's bad row must not lose the others'
            logger.exception("fetch: cannot record %d unchanged feeds at once; one by one",
                             len(batch))
            for feed_id, outcome, at, values in batch:
                try:
                    self.store.record_fetch(feed_id, self.run_id, outcome, at, **values)
                except Exception:
                    logger.exception("feed %s: cannot record its fetch", feed_id)


def fetch_feed(store: Store, fetcher: Fetcher, feed: FeedRow, settings: Settings, run_id: str,
               now: datetime, force: bool = False, *, rng: random.Random | None = None,
               unchanged: UnchangedFeeds | None = None) -> FeedReport:
    """Fetch one feed if due, store its entries and record the outcome (a 304's into
    ``unchanged`` when given, else at once). Never raises."""
    try:
        return _fetch_feed(store, fetcher, feed, settings, run_id, now, force, rng, unchanged)
    except Exception as exc:
        logger.exception("feed %s (%s) failed unexpectedly", feed.feed_id, feed.url)
        return _record_unexpected(store, feed, settings, run_id, now, exc, rng)


def _fetch_feed(store: Store, fetcher: Fetcher, feed: FeedRow, settings: Settings, run_id: str,
                now: datetime, force: bool, rng: random.Random | None,
                unchanged: UnchangedFeeds | None) -> FeedReport:
    report = FeedReport(feed_id=feed.feed_id, url=feed.url, name=feed.display_name,
                        outcome="", next_fetch_at=feed.next_fetch_at)
    configured = next((f for f in settings.feeds if f.url == feed.url), None)
    skip = None
    if feed.dead:
        skip = "skipped-dead"
    elif not feed.enabled or (configured is not None and not configured.enabled):
        skip = "skipped-disabled"
    elif not force and feed.next_fetch_at is not None and now < feed.next_fetch_at:
        skip = "skipped-not-due"
    if skip:
        # Counted for the run only: per-feed counters would grow by one every scheduler tick.
        store.count(run_id, "fetch", skip)
        report.outcome = skip
        return report

    fetch = settings.fetch
    validators = _wants_validators(feed, fetch)
    result = fetcher.get(feed.url, etag=feed.etag if validators else None,
                         last_modified=feed.last_modified if validators else None,
                         accept=FEED_ACCEPT)
    report.status = result.status
    values: dict[str, Any] = {"last_fetched_at": now, "last_status": result.status,
                              "fetch_count": feed.fetch_count + 1}
    outcome = result.outcome
    error = result.error
    ttl_s: float | None = None  # the feed's own minimum interval, as of this fetch

    if outcome == "ok":
        try:
            parsed = parse_feed(result.content, result.url, result.headers,
                                fast_min_bytes=fetch.fast_parse_min_bytes)
        except FeedParseError as exc:
            outcome, error = "parse-error", exc.reason
        else:
            _store_entries(store, feed, parsed, run_id, report)
            ttl_s = _effective_ttl(parsed.ttl_s, cache_max_age_s(result.headers), fetch)
            values.update(etag=result.headers.get("etag"),
                          last_modified=result.headers.get("last-modified"), ttl_s=ttl_s)
            if parsed.title:
                values["title"] = parsed.title[:1000]
            error = parsed.bozo_reason and f"accepted ill-formed feed: {parsed.bozo_reason}"
    elif outcome == "not-modified":
        # The stored ttl (from the last full parse) still holds; a fresh max-age may add to it.
        ttl_s = _effective_ttl(feed.ttl_s, cache_max_age_s(result.headers), fetch)
        for header, column in (("etag", "etag"), ("last-modified", "last_modified")):
            if result.headers.get(header):  # a 304 may carry refreshed validators
                values[column] = result.headers[header]

    if outcome in FEED_SUCCESS:
        interval = max(ttl_s or 0.0, fetch.min_interval_s)
        values.update(consecutive_failures=0, last_success_at=now,
                      next_fetch_at=now + timedelta(seconds=interval))
    elif outcome == "rate-limited" and result.retry_after_s is not None:
        values["next_fetch_at"] = now + timedelta(
            seconds=max(result.retry_after_s, fetch.min_interval_s))
    else:
        failures = feed.consecutive_failures + 1
        values.update(consecutive_failures=failures, next_fetch_at=now + timedelta(
            seconds=backoff_delay_s(failures, fetch, rng)))
        if failures >= fetch.dead_after_failures:
            values["dead"] = True
            report.died = True
            logger.warning("feed %s (%s) is dead after %d failures in a row: %s",
                           feed.feed_id, feed.url, failures, error)

    values.update(last_outcome=outcome, last_error=_truncate(error))
    if outcome == "not-modified" and unchanged is not None:
        unchanged.add(feed.feed_id, outcome, now, values)
    else:
        store.record_fetch(feed.feed_id, run_id, outcome, now, **values)
    report.outcome = outcome
    report.error = error
    report.next_fetch_at = values["next_fetch_at"]
    return report


def _effective_ttl(rss_ttl_s: float | None, max_age_s: float | None,
                   fetch: FetchSettings) -> float | None:
    """The feed's own minimum refetch interval; a server may not park a feed for months."""
    known = [v for v in (rss_ttl_s, max_age_s) if v is not None]
    return min(max(known), fetch.max_retry_after_s) if known else None


def _store_entries(store: Store, feed: FeedRow, parsed: ParsedFeed, run_id: str,
                   report: FeedReport) -> None:
    # As FeedRow.source_name, but the title just parsed beats a stored one (first fetch).
    source = feed.source or feed.name or parsed.title or feed.source_name
    outcomes: Counter[str] = Counter()
    for entry, (outcome, error) in zip(parsed.entries,
                                       store.upsert_entries(feed.feed_id, source, parsed.entries),
                                       strict=True):
        outcomes[outcome] += 1
        if error:
            logger.warning("feed %s: cannot store entry %r: %s", feed.url,
                           entry.link or entry.guid, error)
    if parsed.implausible_dates:
        outcomes["date-dropped"] += parsed.implausible_dates
    for outcome, count in outcomes.items():
        store.count(run_id, "entries", outcome, count)
    if outcomes["item-error"]:
        store.count_feed_outcome(feed.feed_id, "item-error", n=outcomes["item-error"])
    report.entries = len(parsed.entries)
    report.new = outcomes["new"]
    report.updated = outcomes["entry-updated"]
    report.item_errors = outcomes["item-error"]


def _record_unexpected(store: Store, feed: FeedRow, settings: Settings, run_id: str,
                       now: datetime, exc: Exception, rng: random.Random | None) -> FeedReport:
    """Count an unexpected failure like any other (backoff, death), as far as we still can."""
    error = _truncate(f"{type(exc).__name__}: {exc}")
    failures = feed.consecutive_failures + 1
    next_fetch_at = now + timedelta(seconds=backoff_delay_s(failures, settings.fetch, rng))
    died = failures >= settings.fetch.dead_after_failures
    try:
        store.update_feed(feed.feed_id, last_fetched_at=now, last_outcome="error",
                          last_error=error, consecutive_failures=failures,
                          fetch_count=feed.fetch_count + 1, next_fetch_at=next_fetch_at,
                          **({"dead": True} if died else {}))
        store.count_feed_outcome(feed.feed_id, "error", at=now)
        store.count(run_id, "fetch", "error")
    except Exception:
        logger.exception("feed %s: cannot even record the failure", feed.url)
    return FeedReport(feed_id=feed.feed_id, url=feed.url, name=feed.display_name,
                      outcome="error", error=error, next_fetch_at=next_fetch_at, died=died)


# ---- many feeds ----------------------------------------------------------------------------


def fetch_feeds(
    store: Store,
    settings: Settings,
    run_id: str,
    *,
    feed_ids: Iterable[int] | None = None,
    now: datetime | None = None,
    force: bool = False,
    fetcher: Fetcher | None = None,
    on_feed_done: Callable[[FeedReport], None] | None = None,
) -> list[FeedReport]:
    """Fetch the configured feeds (or ``feed_ids`` among them) concurrently, fairly per host.

    The caller has run ``store.sync_feeds(settings.enabled_feeds())``. Reports come back in
    feed order; ``on_feed_done`` is called from this thread as each feed finishes. Feeds the
    stage or host time budget left unstarted report a DEFERRED_OUTCOMES outcome and stay due.
    """
    now = now or datetime.now(UTC)
    configured = {f.url for f in settings.feeds}
    wanted = set(feed_ids) if feed_ids is not None else None
    feeds = [f for f in store.list_feeds()
             if f.url in configured and (wanted is None or f.feed_id in wanted)]
    if not feeds:
        return []
    own_fetcher = fetcher is None
    active = fetcher if fetcher is not None else Fetcher(settings.fetch)
    order = {feed.feed_id: index for index, feed in enumerate(feeds)}
    reports: list[FeedReport | None] = [None] * len(feeds)
    deferred: Deferred[FeedRow] = Deferred()
    fetch = settings.fetch
    unchanged = UnchangedFeeds(store, run_id)
    try:
        done = run_per_host(
            feeds, lambda feed: host_key(feed.url),
            lambda feed: fetch_feed(store, active, feed, settings, run_id, now, force,
                                    unchanged=unchanged),
            concurrency=min(fetch.concurrency, len(feeds)), per_host=fetch.per_host_concurrency,
            stage_budget_s=fetch.stage_budget_s, host_budget_s=fetch.host_budget_s,
            deferred=deferred, thread_name_prefix="feed")
        for feed, report in done:  # fetch_feed never raises
            reports[order[feed.feed_id]] = report
            _notify(on_feed_done, report)
    finally:
        unchanged.flush()
        if own_fetcher:
            active.close()
    for reason, left in deferred.items.items():
        store.count(run_id, "fetch", reason, len(left))
        for feed in left:  # not fetched, not failed: still due on the next run
            report = FeedReport(feed_id=feed.feed_id, url=feed.url, name=feed.display_name,
                                outcome=reason, next_fetch_at=feed.next_fetch_at)
            reports[order[feed.feed_id]] = report
            _notify(on_feed_done, report)
    if deferred:
        logger.warning("fetch: %d feed(s) left for the next run (%s)", len(deferred),
                       ", ".join(f"{k}={v}" for k, v in deferred.counts().items()))
    return [r for r in reports if r is not None]


def _notify(callback: Callable[[FeedReport], None] | None, report: FeedReport) -> None:
    if callback is not None:
        try:
            callback(report)
        except Exception:
            logger.exception("on_feed_done callback failed")


def group_feeds_by_host(feeds: list[FeedRow], max_batches: int) -> list[list[int]]:
    """Split feeds into at most ``max_batches`` batches of feed_ids, never splitting a host.

    Keeping a host's feeds together lets each batch (an Airflow mapped task) enforce that
    host's politeness on its own. Hosts are placed largest first into the lightest batch, so
    batches come out balanced; the result is deterministic.
    """
    if not feeds:
        return []
    by_host: dict[str, list[int]] = {}
    for feed in feeds:
        by_host.setdefault(host_key(feed.url), []).append(feed.feed_id)
    groups = sorted(by_host.items(), key=lambda item: (-len(item[1]), item[0]))
    batches: list[list[int]] = [[] for _ in range(max(1, min(max_batches, len(groups))))]
    for _host, ids in groups:
        lightest = min(range(len(batches)), key=lambda i: (len(batches[i]), i))
        batches[lightest].extend(ids)
    return [sorted(batch) for batch in batches if batch]



# What the fetch stage counts under "fetch", one per feed (the entries of each feed are
# counted under "entries": new, linked, unchanged, entry-updated, no-link, item-error,
# date-dropped).
OUTCOMES = (*FETCH_OUTCOMES, "parse-error", "error", *sorted(SKIP_OUTCOMES),
            *sorted(DEFERRED_OUTCOMES))


def run(context: StageContext) -> list[FeedReport]:
    """The fetch stage: sync the configured feeds, fetch those due (options: ``feed_ids``,
    ``force``)."""
    store, settings = context.store, context.settings
    feed_ids = context.options.get("feed_ids")
    store.sync_feeds(settings.enabled_feeds())
    total = len(feed_ids) if feed_ids is not None else len(settings.enabled_feeds())
    context.advance(STAGE, 0, total)
    return fetch_feeds(
        store, settings, context.run_id, feed_ids=feed_ids,
        force=bool(context.options.get("force", False)),
        on_feed_done=(lambda _r: context.advance(STAGE, 1)) if context.progress else None,
    )

__all__ = [
    "DEFERRED_OUTCOMES",
    "FEED_ACCEPT",
    "OUTCOMES",
    "STAGE",
    "FeedReport",
    "UnchangedFeeds",
    "backoff_delay_s",
    "cache_max_age_s",
    "fetch_feed",
    "fetch_feeds",
    "group_feeds_by_host",
    "run",
]
