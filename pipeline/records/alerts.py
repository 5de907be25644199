"""Alert records, the ledger: exactly-once bookkeeping for alerts and their per-channel deliveries.

An alert row (``alerts``) is written before anything is sent, under a unique key
(watch, story, kind, window), so a rerun, a retry or a second worker cannot create the same
alert twice. Each channel of an alert has its own row (``alert_deliveries``), so a failed
Slack post is retried without resending a delivered email.

A delivery is *claimed* before it is sent by one conditional UPDATE (status still due, row
version unchanged); only the worker whose UPDATE changed the row sends it. States::

    pending --claim--> sending --ok--> sent
                          \\--error--> failed --(backoff)--> claim again ... --> dead

A row left in ``sending`` by a crashed worker is claimed again after ``stale_claim_s``
(``alerts.stale_claim_s``), or at once when its worker is known dead (a process of this host
that no longer exists, :func:`dead_workers`): the one window where a message may go out
twice is a crash after the server accepted it and before ``sent`` was committed, and the
resent message carries the same delivery key (docs/decisions.md, "Duplicate window").
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.engine import Connection

from pipeline import schema
from pipeline.records.store import Store
from pipeline.settings import AlertSettings

# alert statuses
QUEUED = "queued"  # digest mode: waiting for its digest
PENDING = "pending"  # some channel still to deliver
SENT = "sent"  # every channel delivered
FAILED = "failed"  # some channel failed (retried with backoff) or gave up
# delivery statuses
D_PENDING, D_SENDING, D_SENT, D_FAILED, D_DEAD = "pending", "sending", "sent", "failed", "dead"

ONCE = "once"  # the window of a `new` alert: once per story, ever
DIGEST_STORY = ""  # story_id of a digest alert


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for failed deliveries: base, 2×base, 4×base, ... capped
    (``alerts.retry_base_s``, ``retry_max_s``, ``max_attempts``, ``stale_claim_s``)."""

    base_s: float
    max_s: float
    max_attempts: int  # then the delivery is dead until `newswatch alerts retry`
    stale_claim_s: float  # a `sending` row older than this belonged to a dead worker
    # Workers known dead (their claims are taken over at once, whatever their age).
    dead_workers: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, conf: AlertSettings, dead_workers: frozenset[str] = frozenset()) -> RetryPolicy:
        return cls(base_s=conf.retry_base_s, max_s=conf.retry_max_s,
                   max_attempts=conf.max_attempts, stale_claim_s=conf.stale_claim_s,
                   dead_workers=dead_workers)

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        delay = min(self.base_s * (2 ** max(0, attempts - 1)), self.max_s)
        return max(delay, retry_after or 0.0)


def worker_id() -> str:
    """This process as a claimer: ``host:pid:nonce`` (host and pid let a later run on the
    same host tell that it died)."""
    import uuid

    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False  # exists (another user's), or we cannot tell: wait for the lease
    return False


def dead_workers(store: Store) -> frozenset[str]:
    """Claimers of ``sending`` rows that are processes of this host which no longer exist.

    A claim of another host, or of a live (or reused) pid, is left to ``stale_claim_s``.
    """
    d = schema.alert_deliveries
    with store.engine.connect() as conn:
        claimers = [row[0] for row in conn.execute(
            select(d.c.claimed_by).where(d.c.status == D_SENDING).distinct()) if row[0]]
    host = socket.gethostname()[:32]
    dead = set()
    for claimer in claimers:
        claim_host, _, rest = claimer.partition(":")
        pid = rest.partition(":")[0]
        if claim_host == host and pid.isdigit() and int(pid) != os.getpid() \
                and _process_gone(int(pid)):
            dead.add(claimer)
    return frozenset(dead)


# ---- creating alerts -------------------------------------------------------------------------

def create_alert(store: Store, *, watch: str, story_id: str, kind: str, window_key: str,
                 status: str, title: str | None, score: float | None, payload: dict[str, Any],
                 basis: dict[str, Any], channels: Sequence[str], now: datetime,
                 next_attempt_at: datetime | None = None, run_id: str | None = None
                 ) -> int | None:
    """Insert an alert and its delivery rows; None if that (watch, story, kind, window)
    already exists. One transaction, so an alert never exists without its deliveries."""
    a = schema.alerts
    with store.engine.begin() as conn:
        alert_id = conn.execute(
            store._insert(a).values(
                watch=watch, story_id=story_id, kind=kind, window_key=window_key,
                status=status, title=title, score=score, payload=payload, basis=basis,
                run_id=run_id, created_at=now, updated_at=now,
            ).on_conflict_do_nothing(index_elements=["watch", "story_id", "kind", "window_key"])
            .returning(a.c.alert_id)
        ).scalar()
        if alert_id is None:
            return None
        if status != QUEUED:
            _add_deliveries(store, conn, alert_id, channels, now, next_attempt_at)
    return int(alert_id)


def _add_deliveries(store: Store, conn: Connection, alert_id: int, channels: Iterable[str],
                    now: datetime, next_attempt_at: datetime | None) -> None:
    for channel in dict.fromkeys(channels):
        conn.execute(store._insert(schema.alert_deliveries).values(
            alert_id=alert_id, channel=channel, status=D_PENDING, attempts=0,
            next_attempt_at=next_attempt_at or now, version=0, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["alert_id", "channel"]))


def refresh_undelivered(store: Store, alert_id: int, *, title: str | None, score: float | None,
                        payload: dict[str, Any], basis: dict[str, Any], now: datetime) -> bool:
    """Bring an alert nobody has seen yet up to date (instead of queueing an update behind
    it). Only while no channel has even tried it and no digest has taken it."""
    a, d = schema.alerts, schema.alert_deliveries
    touched = exists().where(d.c.alert_id == a.c.alert_id,
                             or_(d.c.attempts > 0, d.c.status != D_PENDING))
    with store.engine.begin() as conn:
        result = conn.execute(
            update(a).where(a.c.alert_id == alert_id, a.c.digest_id.is_(None),
                            a.c.status.in_([QUEUED, PENDING]), ~touched)
            .values(title=title, score=score, payload=payload, basis=basis, updated_at=now))
    return result.rowcount == 1


def create_digest(store: Store, *, watch: str, window_key: str, cutoff: datetime,
                  channels: Sequence[str], now: datetime, run_id: str | None = None
                  ) -> tuple[int | None, int, bool]:
    """Make the digest alert of one window and attach every queued alert up to ``cutoff``.

    Returns (digest alert id or None, alerts attached, whether the window already existed).
    An empty window records nothing.
    """
    a = schema.alerts
    waiting = and_(a.c.watch == watch, a.c.status == QUEUED, a.c.digest_id.is_(None),
                   a.c.created_at <= cutoff)
    with store.engine.begin() as conn:
        existing = conn.execute(select(a.c.alert_id).where(
            a.c.watch == watch, a.c.story_id == DIGEST_STORY, a.c.kind == "digest",
            a.c.window_key == window_key)).scalar()
        if existing is not None:
            return int(existing), 0, True
        if not conn.execute(select(func.count()).select_from(a).where(waiting)).scalar_one():
            return None, 0, False
        digest_id = conn.execute(
            store._insert(a).values(
                watch=watch, story_id=DIGEST_STORY, kind="digest", window_key=window_key,
                status=PENDING, title=f"Digest {window_key}", payload={"cutoff":
                                                                      cutoff.isoformat()},
                basis={}, run_id=run_id, created_at=now, updated_at=now,
            ).on_conflict_do_nothing(index_elements=["watch", "story_id", "kind", "window_key"])
            .returning(a.c.alert_id)
        ).scalar()
        if digest_id is None:  # another worker made it just now
            return None, 0, True
        attached = conn.execute(update(a).where(waiting).values(
            digest_id=digest_id, status=PENDING, updated_at=now)).rowcount
        _add_deliveries(store, conn, digest_id, channels, now, now)
    return int(digest_id), attached, False


# ---- delivering ------------------------------------------------------------------------------

def _due(now: datetime, policy: RetryPolicy):
    d = schema.alert_deliveries
    stale = now - timedelta(seconds=policy.stale_claim_s)
    abandoned = d.c.claimed_at < stale
    if policy.dead_workers:
        abandoned = or_(abandoned, d.c.claimed_by.in_(sorted(policy.dead_workers)))
    return or_(
        and_(d.c.status.in_([D_PENDING, D_FAILED]),
             or_(d.c.next_attempt_at.is_(None), d.c.next_attempt_at <= now)),
        and_(d.c.status == D_SENDING, abandoned),
    )


def due_deliveries(store: Store, now: datetime, policy: RetryPolicy, *,
                   watches: Sequence[str] | None = None, kinds: Sequence[str] | None = None
                   ) -> list[dict[str, Any]]:
    """Deliveries whose time has come (new, retry due, or abandoned by a dead worker)."""
    a, d = schema.alerts, schema.alert_deliveries
    query = (select(d.c.delivery_id, d.c.alert_id, d.c.channel, d.c.status, d.c.attempts,
                    d.c.version, d.c.next_attempt_at, d.c.claimed_at, a.c.watch, a.c.kind,
                    a.c.story_id, a.c.window_key, a.c.score, a.c.payload, a.c.created_at)
             .join(a, a.c.alert_id == d.c.alert_id).where(_due(now, policy))
             .order_by(a.c.watch, d.c.channel, a.c.created_at, d.c.delivery_id))
    if watches is not None:
        query = query.where(a.c.watch.in_(list(watches)))
    if kinds is not None:
        query = query.where(a.c.kind.in_(list(kinds)))
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def claim(store: Store, delivery: dict[str, Any], worker: str, now: datetime,
          policy: RetryPolicy) -> bool:
    """Atomically take one delivery for sending; False if another worker has it."""
    d = schema.alert_deliveries
    with store.engine.begin() as conn:
        result = conn.execute(
            update(d).where(d.c.delivery_id == delivery["delivery_id"],
                            d.c.version == delivery["version"], _due(now, policy))
            .values(status=D_SENDING, claimed_by=worker, claimed_at=now,
                    attempts=d.c.attempts + 1, version=d.c.version + 1, updated_at=now))
    return result.rowcount == 1


def mark_sent(store: Store, delivery_id: int, worker: str, now: datetime,
              via: str = "single") -> bool:
    """Record a delivery; False if our claim had been taken over (it was sent anyway)."""
    d = schema.alert_deliveries
    with store.engine.begin() as conn:
        result = conn.execute(
            update(d).where(d.c.delivery_id == delivery_id, d.c.claimed_by == worker,
                            d.c.status == D_SENDING)
            .values(status=D_SENT, sent_at=now, via=via, last_error=None,
                    version=d.c.version + 1, updated_at=now))
        _refresh_status(conn, delivery_id, now)
    return result.rowcount == 1


def mark_failed(store: Store, delivery_id: int, worker: str, now: datetime, error: str, *,
                retryable: bool, policy: RetryPolicy, retry_after: float | None = None) -> str:
    """Record a failure: ``failed`` with the next attempt after backoff, or ``dead``.

    ``error`` must already be redacted. Returns the new status.
    """
    d = schema.alert_deliveries
    with store.engine.begin() as conn:
        attempts = conn.execute(select(d.c.attempts).where(d.c.delivery_id == delivery_id)
                                ).scalar_one()
        dead = not retryable or attempts >= policy.max_attempts
        status = D_DEAD if dead else D_FAILED
        next_at = None if dead else now + timedelta(seconds=policy.delay(attempts, retry_after))
        conn.execute(
            update(d).where(d.c.delivery_id == delivery_id, d.c.claimed_by == worker,
                            d.c.status == D_SENDING)
            .values(status=status, next_attempt_at=next_at, last_error=error[:1000],
                    version=d.c.version + 1, updated_at=now))
        _refresh_status(conn, delivery_id, now)
    return status


def defer(store: Store, delivery_ids: Sequence[int], until: datetime, now: datetime) -> int:
    """Hold deliveries (quiet hours) without counting an attempt."""
    if not delivery_ids:
        return 0
    d = schema.alert_deliveries
    with store.engine.begin() as conn:
        return conn.execute(
            update(d).where(d.c.delivery_id.in_(list(delivery_ids)),
                            d.c.status.in_([D_PENDING, D_FAILED]))
            .values(next_attempt_at=until, version=d.c.version + 1, updated_at=now)).rowcount


def reset_failed(store: Store, now: datetime, watch: str | None = None) -> int:
    """Make failed and dead deliveries due now with a fresh attempt budget (manual retry)."""
    a, d = schema.alerts, schema.alert_deliveries
    stmt = (update(d).where(d.c.status.in_([D_FAILED, D_DEAD]))
            .values(status=D_FAILED, attempts=0, next_attempt_at=now,
                    version=d.c.version + 1, updated_at=now))
    if watch is not None:
        stmt = stmt.where(d.c.alert_id.in_(select(a.c.alert_id).where(a.c.watch == watch)))
    with store.engine.begin() as conn:
        return conn.execute(stmt).rowcount


def _refresh_status(conn: Connection, delivery_id: int, now: datetime) -> None:
    """Derive the alert's status from its deliveries (and a digest's from its own)."""
    a, d = schema.alerts, schema.alert_deliveries
    alert_id = conn.execute(select(d.c.alert_id).where(d.c.delivery_id == delivery_id)
                            ).scalar_one()
    # Lock the alert row first (PostgreSQL; SQLite serialises writers anyway): two workers
    # finishing different channels of one alert would otherwise each read the other's
    # delivery as still `sending` and leave the alert `pending` for good.
    conn.execute(select(a.c.alert_id).where(a.c.alert_id == alert_id).with_for_update())
    statuses = [row[0] for row in conn.execute(select(d.c.status)
                                               .where(d.c.alert_id == alert_id))]
    if all(s == D_SENT for s in statuses):
        status = SENT
    elif any(s in (D_PENDING, D_SENDING) for s in statuses):
        status = PENDING
    else:
        status = FAILED
    sent_at = now if status == SENT else None
    conn.execute(update(a).where(a.c.alert_id == alert_id)
                 .values(status=status, sent_at=sent_at, updated_at=now))
    conn.execute(update(a).where(a.c.digest_id == alert_id)
                 .values(status=status, sent_at=sent_at, updated_at=now))


# ---- reading ---------------------------------------------------------------------------------

def digest_members(store: Store, digest_id: int) -> list[dict[str, Any]]:
    a = schema.alerts
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(a.c.alert_id, a.c.kind, a.c.story_id, a.c.score, a.c.payload, a.c.created_at)
            .where(a.c.digest_id == digest_id)
            .order_by(case((a.c.kind == "new", 0), else_=1), a.c.score.desc(),
                      a.c.created_at, a.c.alert_id)).mappings().all()
    return [dict(r) for r in rows]


def alerts_for_stories(store: Store, watch: str, story_ids: Sequence[str],
                       since: datetime | None = None) -> list[dict[str, Any]]:
    """new/update alerts of a watch for these stories and (``since``) any recent ones,
    oldest first."""
    a = schema.alerts
    query = (select(a.c.alert_id, a.c.story_id, a.c.kind, a.c.window_key, a.c.status,
                    a.c.digest_id, a.c.basis, a.c.created_at)
             .where(a.c.watch == watch, a.c.kind.in_(["new", "update"]))
             .order_by(a.c.alert_id))
    rows: list[dict[str, Any]] = []
    with store.engine.connect() as conn:
        for start in range(0, len(story_ids), 500):
            chunk = list(story_ids[start:start + 500])
            rows += [dict(r) for r in conn.execute(query.where(a.c.story_id.in_(chunk)))
                     .mappings().all()]
        if since is not None:
            seen = {r["alert_id"] for r in rows}
            rows += [dict(r) for r in conn.execute(query.where(a.c.created_at >= since))
                     .mappings().all() if r["alert_id"] not in seen]
    rows.sort(key=lambda r: r["alert_id"])  # insertion order, even for backfilled clocks
    return rows


def list_alerts(store: Store, watch: str | None = None, since: datetime | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
    """Alerts, newest first, each with its per-channel deliveries (``newswatch alerts``)."""
    a, d = schema.alerts, schema.alert_deliveries
    query = (select(a.c.alert_id, a.c.watch, a.c.story_id, a.c.kind, a.c.window_key,
                    a.c.status, a.c.title, a.c.score, a.c.digest_id, a.c.run_id,
                    a.c.created_at, a.c.sent_at)
             .order_by(a.c.created_at.desc(), a.c.alert_id.desc()))
    if watch is not None:
        query = query.where(a.c.watch == watch)
    if since is not None:
        query = query.where(a.c.created_at >= since)
    if limit is not None:
        query = query.limit(limit)
    with store.engine.connect() as conn:
        alerts = [dict(r) for r in conn.execute(query).mappings().all()]
        by_id = {row["alert_id"]: row for row in alerts}
        for row in alerts:
            row["deliveries"] = []
        ids = list(by_id)
        for start in range(0, len(ids), 500):
            for delivery in conn.execute(
                    select(d.c.alert_id, d.c.channel, d.c.status, d.c.attempts,
                           d.c.next_attempt_at, d.c.last_error, d.c.via, d.c.sent_at)
                    .where(d.c.alert_id.in_(ids[start:start + 500]))
                    .order_by(d.c.channel)).mappings():
                entry = dict(delivery)
                by_id[entry.pop("alert_id")]["deliveries"].append(entry)
    return alerts


def watches_with_alerts(store: Store) -> set[str]:
    """Every watch the ledger holds alerts of."""
    with store.engine.connect() as conn:
        return {r[0] for r in conn.execute(select(schema.alerts.c.watch).distinct())}


def alerted_stories(store: Store, watch: str) -> set[str]:
    """The stories a watch has alerted on (digests excluded)."""
    al = schema.alerts
    with store.engine.connect() as conn:
        rows = conn.execute(select(al.c.story_id).where(al.c.watch == watch,
                                                        al.c.story_id != "").distinct())
        return {r[0] for r in rows}


# ---- the relevance cache -----------------------------------------------------------------------

def cached_scores(store: Store, watch: str, article_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The stored relevance rows of these articles for a watch (``article_watch_scores``)."""
    t = schema.article_watch_scores
    ids = list(article_ids)
    rows: list[dict[str, Any]] = []
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            rows += [dict(r) for r in conn.execute(select(t).where(
                t.c.watch == watch, t.c.article_id.in_(ids[start:start + 500]))).mappings()]
    return rows


def save_scores(store: Store, rows: Sequence[dict[str, Any]]) -> None:
    """Store relevance rows (one per article and watch, replacing an older score)."""
    t = schema.article_watch_scores
    with store.engine.begin() as conn:
        for row in rows:
            stmt = store._insert(t).values(**row)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["article_id", "watch"],
                set_={c: stmt.excluded[c] for c in ("content_hash", "watch_fingerprint",
                                                    "score", "relevant", "reasons",
                                                    "scored_at")}))
