"""The alert stage: which stories are news for which watch, delivered exactly once.

``run_alerts`` (the pipeline's last stage) scores the articles of recently active stories
against every enabled watch (cached per article version), decides ``new`` and ``update``
events, writes them to the ledger, then delivers whatever is due: fresh alerts, retries
whose backoff has passed, deliveries held by quiet hours, and digests whose time has come.
``send_digest`` and ``retry_failed`` back the ``newswatch digest`` / ``alerts retry``
commands. Design and guarantees: docs/decisions.md, "Watches and alerts".
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.exc import OperationalError

from pipeline.alerts.channels import (
    DeliveryError,
    SecretResolver,
    deliver,
    redact,
    resolve_secrets,
)
from pipeline.alerts.render import (
    AlertMessage,
    Rendered,
    plain,
    render_digest,
    render_message,
    shorten,
)
from pipeline.embeddings import embedding_key
from pipeline.language import original_headlines
from pipeline.records import Store, utcnow
from pipeline.records import alerts as ledger
from pipeline.records.alerts import RetryPolicy, list_alerts
from pipeline.records.articles import article_embeddings, articles_by_story, load_texts
from pipeline.records.stories import merged_into_each, recent_stories
from pipeline.settings import AlertSettings, ChannelConfig, Settings, WatchConfig
from pipeline.stages import StageContext
from pipeline.urls import host_of

log = logging.getLogger(__name__)

STAGE = "alerts"
ITEM_ERROR = "item-error"  # one story failed on its own; the other stories went on
# scorer(watch, records) -> one object per record with .score, .relevant, .reasons
Scorer = Callable[[WatchConfig, list[dict[str, Any]]], Sequence[Any]]

__all__ = ["AlertStageError", "digest_window", "list_alerts", "quiet_until",
           "retry_failed", "run_alerts", "send_digest"]


STORY_ARTICLE_COLUMNS = ("article_id", "story_id", "url", "link", "source", "title",
                         "entry_summary", "entry_fingerprint", "content_hash", "version",
                         "language", "published_at", "first_seen_at")


class AlertStageError(RuntimeError):
    """Deciding alerts failed for some watch; what was due was still delivered."""


@dataclass
class _Score:
    score: float
    relevant: bool
    reasons: list[str]


@dataclass
class _Context:
    store: Store
    settings: Settings
    now: datetime
    rules: AlertSettings
    retry: RetryPolicy
    resolver: SecretResolver | None
    worker: str
    counts: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # per watch, raised at the end
    down: set[str] = field(default_factory=set)  # channels that timed out: skipped this run
    secrets: dict[str, dict[str, Any] | DeliveryError] = field(default_factory=dict)

    def watch(self, name: str) -> WatchConfig | None:
        return next((w for w in self.settings.watches if w.name == name), None)


# ---- public API ------------------------------------------------------------------------------

def run_alerts(store: Store, settings: Settings, run_id: str, *, now: datetime | None = None,
               scorer: Scorer | None = None, resolver: SecretResolver | None = None
               ) -> dict[str, int]:
    """The alert stage. Returns its outcome counts (also recorded per run)."""
    ctx = _context(store, settings, now, resolver)
    watches = [w for w in settings.watches if w.enabled]
    if watches and scorer is None:
        try:
            from pipeline.relevance import scorer_for

            scorer = scorer_for(settings)  # the configured embedding model and device
        except ImportError as exc:
            ctx.errors.append(f"relevance scorer unavailable: {exc}")
    for watch in watches:
        try:
            _zone(watch)  # a bad time zone is reported even when no window needs it yet
            if scorer is not None:
                _detect(ctx, watch, scorer, run_id)
            if ctx.rules.send_due_digests and watch.mode == "digest":
                _make_digest(ctx, watch, run_id)
        except Exception as exc:  # the other watches and the deliveries still run
            log.exception("alerts: deciding alerts for watch %r failed", watch.name)
            ctx.counts["watch-error"] += 1
            ctx.errors.append(f"watch {watch.name!r}: {type(exc).__name__}: {exc}")
    _deliver_due(ctx, watches=[w.name for w in watches])
    return _finish(ctx, run_id)


def send_digest(store: Store, settings: Settings, watch_name: str, *,
                now: datetime | None = None, resolver: SecretResolver | None = None,
                run_id: str | None = None) -> dict[str, int]:
    """Send the watch's digest for the latest window (local date + ``digest_at``) that has
    begun: one message per channel with every alert queued before it, exactly once."""
    ctx = _context(store, settings, now, resolver)
    watch = ctx.watch(watch_name)
    if watch is None:
        raise ValueError(f"no watch named {watch_name!r}")
    if watch.mode != "digest":
        raise ValueError(f"watch {watch_name!r} sends immediately (mode: {watch.mode})")
    _make_digest(ctx, watch, run_id)
    _deliver_due(ctx, watches=[watch.name], kinds=["digest"])
    return _finish(ctx, run_id)


def retry_failed(store: Store, settings: Settings, now: datetime | None = None, *,
                 resolver: SecretResolver | None = None, watch: str | None = None,
                 run_id: str | None = None) -> dict[str, int]:
    """Retry failed and given-up deliveries now (``newswatch alerts retry``), then deliver
    everything else that is due. Quiet hours still apply."""
    ctx = _context(store, settings, now, resolver)
    ctx.counts["reset"] += ledger.reset_failed(store, ctx.now, watch)
    names = [watch] if watch else [w.name for w in settings.watches if w.enabled]
    _deliver_due(ctx, watches=names)
    return _finish(ctx, run_id)


# ---- time windows ----------------------------------------------------------------------------

def _zone(watch: WatchConfig) -> ZoneInfo:
    try:
        return ZoneInfo(watch.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"watch {watch.name!r}: unknown time zone {watch.timezone!r}") from None


def _hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def quiet_until(watch: WatchConfig, now: datetime) -> datetime | None:
    """When the watch's quiet hours end (UTC), or None if ``now`` is not in them."""
    if not watch.quiet_hours:
        return None
    start_s, end_s = watch.quiet_hours.split("-")
    start, end = _hhmm(start_s), _hhmm(end_s)
    if start == end:
        return None
    zone = _zone(watch)
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside, end_day = start <= clock < end, local.date()
    else:  # over midnight, e.g. 22:00-07:00
        inside = clock >= start or clock < end
        end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)


def digest_window(watch: WatchConfig, now: datetime) -> tuple[str, datetime]:
    """The latest digest time at or before ``now``: (window key, that time in UTC)."""
    zone = _zone(watch)
    local = now.astimezone(zone)
    at = datetime.combine(local.date(), _hhmm(watch.digest_at), tzinfo=zone)
    if at > local:
        at = datetime.combine(local.date() - timedelta(days=1), _hhmm(watch.digest_at),
                              tzinfo=zone)
    return f"{at.date().isoformat()}@{watch.digest_at}", at.astimezone(UTC)


def update_window(watch: WatchConfig, now: datetime) -> str:
    """Window of an ``update`` (at most one per story per window): the local day for
    immediate watches, the digest it will go out in for digest watches."""
    local = now.astimezone(_zone(watch))
    if watch.mode != "digest":
        return local.date().isoformat()
    at = datetime.combine(local.date(), _hhmm(watch.digest_at), tzinfo=local.tzinfo)
    day = local.date() if local < at else local.date() + timedelta(days=1)
    return f"{day.isoformat()}@{watch.digest_at}"


# ---- deciding --------------------------------------------------------------------------------

def watch_fingerprint(watch: WatchConfig, model: str = "default", watch_model: str = "") -> str:
    """Changes when what decides relevance changes: the watch's matching settings (evidence
    groups included), the scorer version, the embedding model or the watch's own fitted
    model (its digest) (then cached scores are recomputed)."""
    from pipeline.relevance import scorer_id

    evidence = {group: sorted(terms) for group, terms in sorted(watch.evidence.items())}
    basis = json.dumps([watch.description, sorted(watch.keywords), sorted(watch.exclude),
                        evidence, watch.min_score, scorer_id(model, watch_model)],
                       ensure_ascii=False)
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:32]


def _when(article: dict[str, Any]) -> datetime:
    return article.get("published_at") or article["first_seen_at"]


def _source(article: dict[str, Any]) -> str:
    return (article.get("source") or host_of(article.get("url") or article.get("link") or "")
            or "unknown")


def _story_articles(store: Store, story_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    by_story = articles_by_story(store, story_ids, STORY_ARTICLE_COLUMNS)
    for articles in by_story.values():
        articles.sort(key=lambda art: (_when(art), art["article_id"]))
    return by_story


def _field(result: Any, name: str, default: Any = None) -> Any:
    if isinstance(result, dict):
        return result.get(name, default)
    return getattr(result, name, default)


def _scores(ctx: _Context, watch: WatchConfig, articles: list[dict[str, Any]],
            scorer: Scorer) -> dict[str, _Score]:
    """Relevance per article, from the cache unless the text or the watch changed."""
    from pipeline.relevance import watch_model_for

    conf = ctx.settings.embedding
    fitted = watch_model_for(watch, ctx.settings)
    fingerprint = watch_fingerprint(watch, embedding_key(conf.model, conf.backend),
                                    fitted.digest if fitted is not None else "")
    version = {a["article_id"]: (a["content_hash"] or f"e:{a['entry_fingerprint'] or ''}")[:40]
               for a in articles}
    scores: dict[str, _Score] = {}
    for row in ledger.cached_scores(ctx.store, watch.name, list(version)):
        if (row["content_hash"] == version[row["article_id"]]
                and row["watch_fingerprint"] == fingerprint):
            scores[row["article_id"]] = _Score(row["score"], row["relevant"],
                                               list(row["reasons"] or []))
    ctx.counts["score-cached"] += len(scores)
    todo = [a for a in articles if a["article_id"] not in scores]
    for start in range(0, len(todo), ctx.rules.score_batch):
        batch = todo[start:start + ctx.rules.score_batch]
        load_texts(ctx.store, batch)
        records = [{
            "article_id": a["article_id"], "story_id": a["story_id"], "title": a["title"] or "",
            "text": a["text"] or a["entry_summary"] or "", "summary": a["entry_summary"] or "",
            "source": a["source"], "url": a["url"] or a["link"], "language": a["language"],
            "published_at": a["published_at"], "content_hash": a["content_hash"],
        } for a in batch]
        results = list(scorer(watch, records))
        if len(results) != len(records):
            raise ValueError(f"scorer returned {len(results)} scores for {len(records)} articles")
        rows = []
        for article, result in zip(batch, results, strict=True):
            score = _Score(float(_field(result, "score", 0.0) or 0.0),
                           bool(_field(result, "relevant", False)),
                           [str(r) for r in (_field(result, "reasons") or [])])
            scores[article["article_id"]] = score
            rows.append({"article_id": article["article_id"], "watch": watch.name,
                         "content_hash": version[article["article_id"]],
                         "watch_fingerprint": fingerprint, "score": score.score,
                         "relevant": score.relevant, "reasons": score.reasons,
                         "scored_at": ctx.now})
        ledger.save_scores(ctx.store, rows)
        ctx.counts["scored"] += len(batch)
    return scores


def _scores_by_story(ctx: _Context, watch: WatchConfig,
                     by_story: dict[str, list[dict[str, Any]]], articles: list[dict[str, Any]],
                     scorer: Scorer) -> dict[str, _Score]:
    """:func:`_scores` for all stories at once; should that raise, story by story, so that a
    story whose articles cannot be scored costs only itself (``item-error``, logged, left out
    of this run and scored again next run). When no story could be scored at all (a missing
    model), or the database is in trouble, that is the watch's failure: the error is raised.
    """
    counted = ctx.counts.copy()
    try:
        return _scores(ctx, watch, articles, scorer)
    except OperationalError:
        raise
    except Exception as exc:
        error, as_first_tried = exc, ctx.counts.copy()
        log.warning("alerts: scoring %d articles for watch %r failed (%s: %s); scoring "
                    "story by story", len(articles), watch.name, type(exc).__name__, exc)
    ctx.counts = counted.copy()  # what the story-by-story pass scores or finds cached counts
    scores: dict[str, _Score] = {}
    failed: list[str] = []
    for story_id, arts in by_story.items():
        try:
            scores.update(_scores(ctx, watch, arts, scorer))
        except OperationalError:
            raise
        except Exception:
            log.exception("alerts: watch %r, story %s not scored (item-error)", watch.name,
                          story_id)
            failed.append(story_id)
    if failed and ctx.counts["scored"] == counted["scored"]:
        ctx.counts = as_first_tried
        raise error  # the scorer scored nothing: not one story's fault
    ctx.counts[ITEM_ERROR] += len(failed)
    for story_id in failed:  # left out of this run
        by_story[story_id] = []
    return scores


@contextmanager
def _one_story(ctx: _Context, watch: WatchConfig, story: dict[str, Any]) -> Iterator[None]:
    """Contain an error of one story (scoring, rendering, its ledger rows): counted as
    ``item-error`` and logged, and the other stories go on. Database trouble still raises."""
    try:
        yield
    except OperationalError:
        raise
    except Exception:
        log.exception("alerts: watch %r, story %s skipped (item-error)", watch.name,
                      story.get("story_id"))
        ctx.counts[ITEM_ERROR] += 1


def _summary_of(store: Store, article: dict[str, Any]) -> str:
    summary = plain(article.get("entry_summary"))
    if len(summary) < 40:
        load_texts(store, [article])
        summary = plain(article.get("text")) or summary
    return shorten(summary, 600)


def _message(store: Store, watch: WatchConfig, kind: str, story: dict[str, Any],
             articles: list[dict[str, Any]], lead: dict[str, Any], score: _Score,
             reasons: list[str], new_sources: list[str] | None = None) -> AlertMessage:
    sources: dict[str, str | None] = {}
    for article in articles:  # oldest first: each outlet's first report
        sources.setdefault(_source(article), article.get("url") or article.get("link"))
    return AlertMessage(
        watch=watch.name, kind=kind, story_id=story["story_id"],
        title=story.get("title") or articles[0].get("title") or lead.get("title") or "",
        sources=list(sources.items()),
        first_seen=story.get("first_seen_at") or _when(articles[0]),
        summary=_summary_of(store, lead), reasons=reasons, article_count=len(articles),
        score=round(score.score, 4), new_sources=new_sources or [], timezone=watch.timezone,
        originals=original_headlines(articles))


def _basis(articles: list[dict[str, Any]]) -> dict[str, Any]:
    return {"sources": sorted({_source(a) for a in articles}),
            "article_ids": sorted(a["article_id"] for a in articles)}


def _far_article(store: Store, first: dict[str, Any], candidates: list[dict[str, Any]],
                 threshold: float) -> dict[str, Any] | None:
    """A candidate whose embedding is far from the first report's (None without vectors)."""
    if not candidates:
        return None
    wanted = {first["article_id"]: first["version"],
              **{c["article_id"]: c["version"] for c in candidates}}
    blobs = article_embeddings(store, wanted)
    if first["article_id"] not in blobs:
        return None
    import numpy as np

    from pipeline.embeddings import unpack_vector

    def unit(blob: bytes) -> Any:
        vector = unpack_vector(blob)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector

    anchor = unit(blobs[first["article_id"]])
    for candidate in candidates:
        blob = blobs.get(candidate["article_id"])
        if blob is not None and float(np.dot(anchor, unit(blob))) < threshold:
            return candidate
    return None


def _channels_of(ctx: _Context, watch: WatchConfig) -> list[str]:
    names = []
    for name in watch.channels:
        if name in ctx.settings.channels:
            names.append(name)
        else:
            ctx.counts["unknown-channel"] += 1
            log.warning("alerts: watch %r names channel %r, which is not configured",
                        watch.name, name)
    return names


def _detect(ctx: _Context, watch: WatchConfig, scorer: Scorer, run_id: str | None) -> None:
    """Score the recent stories for one watch and write new/update alerts to the ledger."""
    rules = ctx.rules
    days = rules.lookback_days or max(ctx.settings.stories.window_days, 1.0)
    stories = recent_stories(ctx.store, ctx.now - timedelta(days=days))
    if not stories:
        return
    by_story = _story_articles(ctx.store, [s["story_id"] for s in stories])
    articles = [a for arts in by_story.values() for a in arts]
    scores = _scores_by_story(ctx, watch, by_story, articles, scorer)
    # Stories consolidation folded into these: their alerts are this story's alerts.
    folded = merged_into_each(ctx.store, list(by_story))
    prior = ledger.alerts_for_stories(
        ctx.store, watch.name, [*by_story, *(f for ids in folded.values() for f in ids)],
        since=ctx.now - timedelta(days=rules.continuation_days))
    last_alert: dict[str, dict[str, Any]] = {}
    alerted_in: dict[str, dict[str, Any]] = {}  # article -> latest alert that covered it
    for alert in prior:  # oldest first, so later alerts win
        last_alert[alert["story_id"]] = alert
        for article_id in (alert["basis"] or {}).get("article_ids", []):
            alerted_in[article_id] = alert
    channels = _channels_of(ctx, watch)
    immediate = watch.mode != "digest"

    for story in stories:
        with _one_story(ctx, watch, story):  # one story's failure is its own
            arts = by_story.get(story["story_id"])
            if not arts:
                continue
            relevant = [a for a in arts if scores[a["article_id"]].relevant]
            if not relevant:
                continue
            ctx.counts["relevant-stories"] += 1
            best = max(relevant, key=lambda a: scores[a["article_id"]].score)
            best_score = _story_score(scores[best["article_id"]], best, len(relevant),
                                      len(arts))
            basis = _basis(arts)
            last = max((last_alert[sid] for sid in (story["story_id"],
                                                    *folded.get(story["story_id"], ()))
                        if sid in last_alert), key=lambda r: r["alert_id"], default=None)
            if last is None:  # a story re-identified under a new id continues its old alerts
                last = max((alerted_in[a["article_id"]] for a in arts
                            if a["article_id"] in alerted_in),
                           key=lambda r: r["alert_id"], default=None)
                if last is not None:
                    ctx.counts["continued"] += 1

            if last is None:
                message = _message(ctx.store, watch, "new", story, arts, relevant[0], best_score,
                                   best_score.reasons)
                _create(ctx, watch, message, basis, ledger.ONCE, channels, immediate, run_id)
                continue

            seen = last["basis"] or {}
            new_ids = {a["article_id"] for a in arts} - set(seen.get("article_ids", []))
            if not new_ids:
                continue
            newest = [a for a in relevant if a["article_id"] in new_ids] or relevant
            if last["story_id"] == story["story_id"] and last["status"] in (ledger.QUEUED,
                                                                            ledger.PENDING):
                kind = "new" if last["kind"] == "new" else "update"
                message = _message(ctx.store, watch, kind, story, arts,
                                   relevant[0] if kind == "new" else newest[-1], best_score,
                                   best_score.reasons)
                if ledger.refresh_undelivered(ctx.store, last["alert_id"], title=message.title,
                                              score=message.score, payload=message.to_dict(),
                                              basis=basis, now=ctx.now):
                    ctx.counts["refreshed"] += 1
                    continue

            window_key = update_window(watch, ctx.now)
            new_sources = sorted(set(basis["sources"]) - set(seen.get("sources", [])))
            reason = None
            if len(new_sources) >= rules.update_min_new_sources:
                reason = f"{len(new_sources)} new sources since the last alert"
            else:
                far = _far_article(ctx.store, arts[0],
                                   [a for a in relevant if a["article_id"] in new_ids],
                                   rules.far_similarity)
                if far is not None:
                    newest = [far]
                    reason = "a new article differs from the first report"
            if reason is None:
                continue
            if last["kind"] == "update" and last["window_key"] == window_key:
                ctx.counts["update-suppressed"] += 1  # one per window; it waits for the next
                continue
            message = _message(ctx.store, watch, "update", story, arts, newest[-1], best_score,
                               [reason, *best_score.reasons], new_sources)
            _create(ctx, watch, message, basis, window_key, channels, immediate, run_id)


def _story_score(best: _Score, article: dict[str, Any], relevant: int, total: int) -> _Score:
    """The story's verdict: its most relevant member decides (one article that makes the
    topic a point of its own is enough; mentions elsewhere do not add up). A story of several
    articles says which one and how many agree; the member's own reasons (its passage) follow.
    """
    if total < 2:
        return best
    count = f"{relevant} of {total} articles relevant"
    return _Score(best.score, best.relevant,
                  [f"{count}, quoted: {_source(article)}", *best.reasons])


def _create(ctx: _Context, watch: WatchConfig, message: AlertMessage, basis: dict[str, Any],
            window_key: str, channels: list[str], immediate: bool, run_id: str | None) -> None:
    held = quiet_until(watch, ctx.now) if immediate else None
    alert_id = ledger.create_alert(
        ctx.store, watch=watch.name, story_id=message.story_id, kind=message.kind,
        window_key=window_key, status=ledger.PENDING if immediate else ledger.QUEUED,
        title=message.title, score=message.score, payload=message.to_dict(), basis=basis,
        channels=channels, now=ctx.now, next_attempt_at=held, run_id=run_id)
    if alert_id is None:  # this event is already in the ledger (another run or worker)
        ctx.counts["exists" if message.kind == "new" else "update-suppressed"] += 1
        return
    ctx.counts[message.kind] += 1
    if held is not None:
        ctx.counts["deferred-quiet-hours"] += len(channels)
    if not immediate:
        ctx.counts["queued-digest"] += 1


# ---- delivering ------------------------------------------------------------------------------

def _context(store: Store, settings: Settings, now: datetime | None,
             resolver: SecretResolver | None) -> _Context:
    now = now or utcnow()
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    # Claims of a crashed run on this host are taken over at once, not after stale_claim_s.
    retry = RetryPolicy.of(settings.alerts, ledger.dead_workers(store))
    return _Context(store=store, settings=settings, now=now, rules=settings.alerts,
                    retry=retry, resolver=resolver, worker=ledger.worker_id())


def _make_digest(ctx: _Context, watch: WatchConfig, run_id: str | None) -> None:
    key, at = digest_window(watch, ctx.now)
    digest_id, attached, existed = ledger.create_digest(
        ctx.store, watch=watch.name, window_key=key, cutoff=at,
        channels=_channels_of(ctx, watch), now=ctx.now, run_id=run_id)
    if digest_id is not None and not existed:
        ctx.counts["digest"] += 1
        ctx.counts["digested"] += attached


def _secrets(ctx: _Context, name: str, config: ChannelConfig) -> dict[str, Any]:
    cached = ctx.secrets.get(name)
    if cached is None:
        try:
            cached = resolve_secrets(name, config, ctx.resolver)
        except DeliveryError as exc:
            cached = exc
        ctx.secrets[name] = cached
    if isinstance(cached, DeliveryError):
        raise cached
    return cached


def _render(ctx: _Context, row: dict[str, Any], watch: WatchConfig | None) -> Rendered:
    if row["kind"] == "digest":
        members = ledger.digest_members(ctx.store, row["alert_id"])
        messages = []
        for member in members:
            message = AlertMessage.from_dict(member["payload"])
            message.alert_id = member["alert_id"]
            messages.append(message)
        limit = watch.max_per_window if watch else 10
        return render_digest(row["watch"], messages, limit=limit, window=row["window_key"],
                             timezone=watch.timezone if watch else "UTC")
    message = AlertMessage.from_dict(row["payload"])
    message.alert_id = row["alert_id"]
    return render_message(message)


def _send(ctx: _Context, channel: str, config: ChannelConfig | None, rows: list[dict[str, Any]],
          rendered_for: Callable[[list[dict[str, Any]]], Rendered], via: str) -> None:
    """Claim ``rows`` (one message's worth), send once, record the outcome on each."""
    policy = ctx.retry
    if channel in ctx.down:  # timed out earlier in this run: its alerts wait for the next
        ctx.counts["skipped-channel-down"] += len(rows)
        return
    claimed = []
    for row in rows:
        if ledger.claim(ctx.store, row, ctx.worker, ctx.now, policy):
            claimed.append(row)
            if row["status"] == ledger.D_SENDING:
                ctx.counts["reclaimed-stale"] += 1
        else:
            ctx.counts["claimed-elsewhere"] += 1
    if not claimed:
        return
    secrets: dict[str, Any] = {}
    try:
        if config is None:
            raise DeliveryError(f"channel {channel!r} is not configured", retryable=False)
        secrets = _secrets(ctx, channel, config)
        rendered = rendered_for(claimed)
        deliver(config, [rendered], secrets, name=channel, now=ctx.now,
                timeout_s=ctx.rules.smtp_timeout_s,
                slack_max_wait_s=ctx.rules.slack_max_wait_s)
    except Exception as exc:
        if isinstance(exc, DeliveryError):
            error = DeliveryError(exc.message, retryable=exc.retryable,
                                  retry_after=exc.retry_after)
            if exc.timed_out:
                ctx.down.add(channel)
        else:  # a bug or an unexpected library error: keep the row, retry later
            log.exception("alerts: unexpected error delivering to %r", channel)
            error = DeliveryError(redact(f"{type(exc).__name__}: {exc}", secrets),
                                  retryable=True)
        for row in claimed:
            status = ledger.mark_failed(ctx.store, row["delivery_id"], ctx.worker, ctx.now,
                                        error.message, retryable=error.retryable,
                                        policy=policy, retry_after=error.retry_after)
            ctx.counts[status] += 1
        log.warning("alerts: %d alert(s) for %r not delivered to %r (%s): %s",
                    len(claimed), claimed[0]["watch"], channel,
                    "will retry" if error.retryable else "gave up", error.message)
        return
    for row in claimed:
        if not ledger.mark_sent(ctx.store, row["delivery_id"], ctx.worker, ctx.now, via):
            ctx.counts["sent-after-takeover"] += 1
        ctx.counts["sent"] += 1
    if via == "rollup":
        ctx.counts["rolled-up"] += len(claimed)


def _deliver_due(ctx: _Context, *, watches: Sequence[str],
                 kinds: Sequence[str] | None = None) -> None:
    """Send what is due, watch by watch (one misconfigured watch does not stop the others)."""
    rows = ledger.due_deliveries(ctx.store, ctx.now, ctx.retry, watches=watches,
                                 kinds=kinds)
    by_watch: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_watch[row["watch"]].append(row)
    for watch_name, watch_rows in by_watch.items():
        watch = ctx.watch(watch_name)
        if watch is None or not watch.enabled:
            continue
        try:
            _deliver_watch(ctx, watch, watch_rows)
        except Exception as exc:
            log.exception("alerts: delivering for watch %r failed", watch_name)
            ctx.counts["watch-error"] += 1
            ctx.errors.append(f"watch {watch_name!r}: {type(exc).__name__}: {exc}")


def _deliver_watch(ctx: _Context, watch: WatchConfig, rows: list[dict[str, Any]]) -> None:
    """Per channel: the first ``max_per_window`` alerts one by one, the rest as one "+N more"
    roll-up; digests as they are. Quiet hours hold everything but digests."""
    held_until = quiet_until(watch, ctx.now)
    if held_until is not None:
        held = [r["delivery_id"] for r in rows if r["kind"] != "digest"]
        ledger.defer(ctx.store, held, held_until, ctx.now)
        ctx.counts["deferred-quiet-hours"] += len(held)
        rows = [r for r in rows if r["kind"] == "digest"]
    by_channel: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_channel[row["channel"]].append(row)
    for channel, channel_rows in by_channel.items():
        config = ctx.settings.channels.get(channel)
        digests = [r for r in channel_rows if r["kind"] == "digest"]
        singles = sorted((r for r in channel_rows if r["kind"] != "digest"),
                         key=lambda r: (r["kind"] != "new", -(r["score"] or 0.0),
                                        r["created_at"], r["alert_id"]))
        for row in [*digests, *singles[:watch.max_per_window]]:
            via = "digest" if row["kind"] == "digest" else "single"
            _send(ctx, channel, config, [row],
                  lambda claimed: _render(ctx, claimed[0], watch), via)
        rest = singles[watch.max_per_window:]
        if rest:
            _send(ctx, channel, config, rest, lambda claimed: _rollup(claimed, watch), "rollup")


def _rollup(rows: list[dict[str, Any]], watch: WatchConfig) -> Rendered:
    messages = []
    for row in rows:
        message = AlertMessage.from_dict(row["payload"])
        message.alert_id = row["alert_id"]
        messages.append(message)
    return render_digest(watch.name, messages, limit=0, timezone=watch.timezone)


def _finish(ctx: _Context, run_id: str | None) -> dict[str, int]:
    """Record the counts for the run, then report any watch that failed."""
    counts = {outcome: n for outcome, n in sorted(ctx.counts.items()) if n}
    if run_id is not None:
        for outcome, n in counts.items():
            ctx.store.count(run_id, STAGE, outcome, n)
    if ctx.errors:
        raise AlertStageError("; ".join(ctx.errors))
    return counts


# ---- the stage contract (pipeline/stages.py) --------------------------------------------

# What the alert stage counts under "alerts": deciding (per story and article), what was
# created (its kind), and delivering (per delivery and its new status).
OUTCOMES = ("scored", "score-cached", "relevant-stories", "continued", "refreshed",
            "update-suppressed", "new", "update", "digest", "queued-digest", "digested",
            "sent", "sent-after-takeover", "failed", "dead", "deferred-quiet-hours",
            "claimed-elsewhere", "reclaimed-stale", "rolled-up", "skipped-channel-down",
            "unknown-channel", "reset", "watch-error", ITEM_ERROR)


def run(context: StageContext) -> dict[str, int]:
    """The alert stage: nothing to do without an enabled watch (option: ``resolver`` for
    channel secrets)."""
    if not any(w.enabled for w in context.settings.watches):
        return {}
    return run_alerts(context.store, context.settings, context.run_id,
                      resolver=context.options.get("resolver"))
