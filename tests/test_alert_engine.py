"""The alert stage end to end over a real store: decisions, the ledger, retries, digests."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from pipeline import schema
from pipeline.alerts.engine import (
    AlertStageError,
    digest_window,
    list_alerts,
    quiet_until,
    retry_failed,
    run_alerts,
    send_digest,
)
from pipeline.embeddings import pack_vector
from pipeline.records import alerts as ledger
from pipeline.records import open_store
from pipeline.settings import AlertSettings, Settings, WatchConfig
from tests.support.factories import add_article, add_story, add_version, with_alerts
from tests.support.httpserver import Response
from tests.test_alert_delivery import SMTPSink, free_port

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
HOOK = "/services/T1/B1/hooktoken777"


class FakeScorer:
    """Relevant when 'Taiwan' is in the title; records every article it was asked about."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, watch, records):
        self.seen += [r["article_id"] for r in records]
        return [SimpleNamespace(score=0.9 if "Taiwan" in r["title"] else 0.1,
                                relevant="Taiwan" in r["title"],
                                reasons=["'Taiwan' in the title"] if "Taiwan" in r["title"]
                                else []) for r in records]


@pytest.fixture
def scorer():
    return FakeScorer()


def add_articles(store, story_id: str, items: list[tuple[str, str]], at: datetime,
                 story_title: str | None = None) -> list[str]:
    """Insert articles (source, title) into a story, creating or updating the story row."""
    ids = []
    with store.engine.connect() as conn:
        existing = conn.execute(select(schema.articles.c.article_id).where(
            schema.articles.c.story_id == story_id)).all()
        row = conn.execute(select(schema.stories.c.story_id).where(
            schema.stories.c.story_id == story_id)).first()
    for n, (source, title) in enumerate(items, start=len(existing)):
        article_id = f"{story_id}-{n}"
        ids.append(article_id)
        add_article(store, article_id, url=f"https://{source.lower().replace(' ', '')}.example/"
                    f"{article_id}", source=source, title=title,
                    text=f"{title}. Full text of the report from {source}.",
                    published_at=at, story_id=story_id)
    count = len(existing) + len(items)
    if row is None:
        add_story(store, story_id, title=story_title or items[0][1], at=at,
                  article_count=count, sources=[s for s, _ in items])
    else:
        with store.engine.begin() as conn:
            conn.execute(update(schema.stories).where(schema.stories.c.story_id == story_id)
                         .values(last_seen_at=at, article_count=count, updated_at=at))
    return ids


def make_settings(channels: dict, **watch) -> Settings:
    values = {"name": "taiwan", "keywords": ["Taiwan"], "channels": list(channels), **watch}
    return Settings(watches=[values], channels=channels, stories={"window_days": 3})


def outbox(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def deliveries(store) -> dict[tuple[int, str], dict]:
    return {(row["alert_id"], d["channel"]): {**d, "kind": row["kind"]}
            for row in list_alerts(store) for d in row["deliveries"]}


@pytest.fixture
def outbox_path(tmp_path) -> Path:
    return tmp_path / "outbox.jsonl"


@pytest.fixture
def file_only(outbox_path) -> dict:
    return {"outbox": {"type": "file", "path": str(outbox_path)}}


# ---- new, rerun, update ------------------------------------------------------------------------

def test_new_story_alerts_once_per_channel_and_reruns_send_nothing(
        store, scorer, outbox_path, http_server):
    http_server.route(HOOK, body="ok")
    with SMTPSink() as smtp:
        channels = {
            "outbox": {"type": "file", "path": str(outbox_path)},
            "mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port,
                     "sender": "nw@example.org", "to": ["desk@example.org"]},
            "slack": {"type": "slack", "webhook_url": http_server.url(HOOK)},
        }
        settings = make_settings(channels)
        add_articles(store, "s1", [("Harbor Post", "PLA drills near Taiwan")], T0)
        add_articles(store, "s2", [("Harbor Post", "Football results")], T0)
        run_id = store.start_run()
        counts = run_alerts(store, settings, run_id, now=T0, scorer=scorer)
        assert counts["new"] == 1 and counts["sent"] == 3
        assert store.run_counts(run_id)["alerts"]["new"] == 1
        assert len(outbox(outbox_path)) == 1 and len(smtp.messages) == 1
        assert len(http_server.requests(HOOK)) == 1
        assert smtp.messages[0]["Subject"] == (
            "[newswatch] taiwan: New story: PLA drills near Taiwan")

        for minutes in (15, 30):  # reruns, and a retried run with the same id
            counts = run_alerts(store, settings, run_id, now=T0 + timedelta(minutes=minutes),
                                scorer=scorer)
            assert "new" not in counts and "sent" not in counts
        assert len(outbox(outbox_path)) == 1 and len(smtp.messages) == 1
        assert len(http_server.requests(HOOK)) == 1
    assert sorted(scorer.seen) == ["s1-0", "s2-0"]  # cached per article version
    (alert,) = list_alerts(store)
    assert alert["status"] == "sent" and alert["kind"] == "new"
    assert {d["channel"]: d["status"] for d in alert["deliveries"]} == {
        "mail": "sent", "outbox": "sent", "slack": "sent"}


def test_one_member_making_the_point_makes_the_story_relevant_with_its_reasons(
        store, scorer, file_only, outbox_path):
    """The story's verdict comes from its members together: the relevant one decides, the
    alert says how many agree and quotes that member's reasons; nothing is scored twice."""
    settings = make_settings(file_only)
    add_articles(store, "s1", [("Harbor Post", "Ministers meet for talks"),
                               ("Pacific Wire", "Taiwan is the biggest obstacle, minister says"),
                               ("Meridian Daily", "Talks end without a deal")], T0)
    counts = run_alerts(store, settings, "r1", now=T0, scorer=scorer)
    assert counts["new"] == 1 and counts["scored"] == 3
    (line,) = outbox(outbox_path)
    assert line["reasons"] == ["1 of 3 articles relevant, quoted: Pacific Wire",
                               "'Taiwan' in the title"]
    assert line["score"] == 0.9 and line["article_count"] == 3
    add_articles(store, "s1", [("Harbor Post", "Talks: the reaction")], T0)
    counts = run_alerts(store, settings, "r2", now=T0 + timedelta(minutes=5), scorer=scorer)
    assert counts["scored"] == 1 and counts["score-cached"] == 3  # only the new member


def test_changed_article_text_is_rescored(store, scorer, file_only):
    settings = make_settings(file_only)
    add_articles(store, "s1", [("A", "Election campaign opens")], T0)
    run_alerts(store, settings, "r1", now=T0, scorer=scorer)
    assert list_alerts(store) == []
    with store.engine.begin() as conn:
        conn.execute(update(schema.articles).values(title="Taiwan election campaign opens",
                                                    content_hash="h2", version=2))
    counts = run_alerts(store, settings, "r2", now=T0 + timedelta(minutes=10), scorer=scorer)
    assert counts["scored"] == 1 and counts["new"] == 1
    assert scorer.seen == ["s1-0", "s1-0"]


def test_growth_by_three_sources_sends_one_update_per_window(store, scorer, file_only,
                                                              outbox_path):
    settings = make_settings(file_only)
    add_articles(store, "s1", [("A", "Taiwan recalls envoy")], T0)
    run_alerts(store, settings, "r1", now=T0, scorer=scorer)

    t1 = T0 + timedelta(hours=1)
    add_articles(store, "s1", [("B", "Envoy recalled"), ("C", "Taiwan envoy")], t1)
    counts = run_alerts(store, settings, "r2", now=t1, scorer=scorer)
    assert "update" not in counts  # two new sources are not enough

    t2 = T0 + timedelta(hours=2)
    add_articles(store, "s1", [("D", "Taiwan envoy row deepens"), ("A", "More from A")], t2)
    counts = run_alerts(store, settings, "r3", now=t2, scorer=scorer)
    assert counts["update"] == 1
    lines = outbox(outbox_path)
    assert [line["kind"] for line in lines] == ["new", "update"]
    assert lines[1]["new_sources"] == ["B", "C", "D"]
    assert lines[1]["reasons"][0] == "3 new sources since the last alert"
    assert lines[1]["article_count"] == 5

    t3 = T0 + timedelta(hours=5)  # three more outlets, the same day: no second update
    add_articles(store, "s1", [("E", "Taiwan 1"), ("F", "Taiwan 2"), ("G", "Taiwan 3")], t3)
    counts = run_alerts(store, settings, "r4", now=t3, scorer=scorer)
    assert counts.get("update-suppressed") == 1 and "update" not in counts
    assert len(outbox(outbox_path)) == 2

    t4 = T0 + timedelta(days=1)  # the next day's window: the growth is news again
    add_articles(store, "s1", [("H", "Taiwan 4")], t4)
    counts = run_alerts(store, settings, "r5", now=t4, scorer=scorer)
    assert counts["update"] == 1
    assert outbox(outbox_path)[-1]["new_sources"] == ["E", "F", "G", "H"]


def test_new_article_far_from_first_report_is_an_update(store, scorer, file_only,
                                                        outbox_path):
    settings = make_settings(file_only)
    (first,) = add_articles(store, "s1", [("A", "Taiwan typhoon warning")], T0)
    run_alerts(store, settings, "r1", now=T0, scorer=scorer)
    t1 = T0 + timedelta(hours=3)
    near, far = add_articles(store, "s1", [("A", "Taiwan typhoon nears"),
                                           ("B", "Taiwan typhoon: chip plants shut")], t1)
    for article_id, vector in ((first, [1.0, 0.0, 0.0]), (near, [0.9, 0.1, 0.0]),
                               (far, [0.2, 0.1, 0.97])):
        add_version(store, article_id, title="t", text="x", seen_at=t1,
                    embedding=pack_vector(__import__("numpy").array(vector, dtype="float32")))
    counts = run_alerts(store, settings, "r2", now=t1, scorer=scorer)
    assert counts["update"] == 1
    update_line = outbox(outbox_path)[-1]
    assert update_line["reasons"][0] == "a new article differs from the first report"
    assert "chip plants" in update_line["summary"]


def test_story_under_a_new_id_is_not_news_again(store, scorer, file_only, outbox_path):
    settings = make_settings(file_only)
    add_articles(store, "s1", [("A", "Taiwan strait transit")], T0)
    run_alerts(store, settings, "r1", now=T0, scorer=scorer)
    with store.engine.begin() as conn:  # the story stage re-identified the story
        conn.execute(update(schema.articles).values(story_id="s9"))
        conn.execute(update(schema.stories).values(story_id="s9"))
    counts = run_alerts(store, settings, "r2", now=T0 + timedelta(hours=1), scorer=scorer)
    assert counts["continued"] == 1 and "new" not in counts
    assert len(outbox(outbox_path)) == 1


# ---- failures and retries ----------------------------------------------------------------------

def test_smtp_down_then_up_retries_without_loss_or_duplicates(store, scorer, outbox_path):
    port = free_port()
    channels = {"outbox": {"type": "file", "path": str(outbox_path)},
                "mail": {"type": "email", "host": "127.0.0.1", "port": port,
                         "sender": "nw@example.org", "to": ["desk@example.org"]}}
    settings = make_settings(channels)
    add_articles(store, "s1", [("A", "Taiwan reports cyberattack")], T0)
    add_articles(store, "s2", [("B", "Taiwan power outage")], T0)
    counts = run_alerts(store, settings, "r1", now=T0, scorer=scorer)
    assert counts["new"] == 2 and counts["sent"] == 2 and counts["failed"] == 2
    state = deliveries(store)
    mail = [d for (_, channel), d in state.items() if channel == "mail"]
    assert all(d["status"] == "failed" and d["attempts"] == 1 for d in mail)
    assert all(d["next_attempt_at"] == T0 + timedelta(seconds=60) for d in mail)
    assert all("cannot reach 127.0.0.1" in d["last_error"] for d in mail)

    counts = run_alerts(store, settings, "r2", now=T0 + timedelta(seconds=30), scorer=scorer)
    assert "failed" not in counts and "sent" not in counts  # backoff not over yet

    with SMTPSink(port=port) as smtp:
        counts = run_alerts(store, settings, "r3", now=T0 + timedelta(minutes=2),
                            scorer=scorer)
        assert counts["sent"] == 2
        run_alerts(store, settings, "r4", now=T0 + timedelta(minutes=10), scorer=scorer)
        subjects = sorted(m["Subject"] for m in smtp.messages)
    assert subjects == ["[newswatch] taiwan: New story: Taiwan power outage",
                        "[newswatch] taiwan: New story: Taiwan reports cyberattack"]
    assert len(outbox(outbox_path)) == 2
    assert all(row["status"] == "sent" for row in list_alerts(store))


def test_slack_500_then_ok(store, scorer, outbox_path, http_server):
    http_server.route(HOOK, [Response(status=500, body="oops"), Response(body="ok")])
    channels = {"outbox": {"type": "file", "path": str(outbox_path)},
                "slack": {"type": "slack", "webhook_url": http_server.url(HOOK)}}
    settings = make_settings(channels)
    add_articles(store, "s1", [("A", "Taiwan quake")], T0)
    counts = run_alerts(store, settings, "r1", now=T0, scorer=scorer)
    assert counts["failed"] == 1 and counts["sent"] == 1
    (alert,) = list_alerts(store)
    assert alert["status"] == "failed"
    counts = run_alerts(store, settings, "r2", now=T0 + timedelta(minutes=5), scorer=scorer)
    assert counts["sent"] == 1
    assert len(http_server.requests(HOOK)) == 2 and len(outbox(outbox_path)) == 1
    assert list_alerts(store)[0]["status"] == "sent"


def test_slack_long_retry_after_sets_next_attempt(store, scorer, http_server):
    http_server.route(HOOK, status=429, headers={"Retry-After": "900"})
    settings = make_settings({"slack": {"type": "slack", "webhook_url": http_server.url(HOOK)}})
    add_articles(store, "s1", [("A", "Taiwan quake")], T0)
    run_alerts(store, with_alerts(settings, slack_max_wait_s=1), "r1", now=T0, scorer=scorer)
    (delivery,) = deliveries(store).values()
    assert delivery["status"] == "failed"
    assert delivery["next_attempt_at"] == T0 + timedelta(seconds=900)


def test_permanent_failure_waits_for_manual_retry(store, scorer, http_server, caplog,
                                                  monkeypatch):
    http_server.route(HOOK, status=404, body=f"no_service {HOOK}")
    monkeypatch.setenv("NW_T_HOOK", http_server.url(HOOK))
    settings = make_settings({"slack": {"type": "slack", "webhook_url_env": "NW_T_HOOK"}})
    add_articles(store, "s1", [("A", "Taiwan quake")], T0)
    counts = run_alerts(store, settings, "r1", now=T0, scorer=scorer)
    assert counts["dead"] == 1
    (delivery,) = deliveries(store).values()
    assert delivery["status"] == "dead" and "HTTP 404" in delivery["last_error"]
    run_alerts(store, settings, "r2", now=T0 + timedelta(days=1), scorer=scorer)
    assert len(http_server.requests(HOOK)) == 1  # not retried on its own

    http_server.route(HOOK, body="ok")  # the user fixed the webhook
    counts = retry_failed(store, settings, T0 + timedelta(days=1, minutes=1))
    assert counts["reset"] == 1 and counts["sent"] == 1
    assert "hooktoken777" not in caplog.text
    assert all("hooktoken777" not in (d["last_error"] or "") for d in deliveries(store).values())


def test_secrets_never_reach_logs_or_ledger(store, scorer, caplog):
    caplog.set_level("DEBUG")
    port = free_port()
    settings = make_settings({
        "mail": {"type": "email", "host": "127.0.0.1", "port": port, "username": "nw",
                 "password": "pa55-word-xyz", "sender": "nw@example.org", "to": ["d@e.org"]},
        "slack": {"type": "slack",
                  "webhook_url": f"http://127.0.0.1:{port}/services/T/B/tok-abc-123"}})
    add_articles(store, "s1", [("A", "Taiwan quake")], T0)
    counts = run_alerts(store, settings, "r1", now=T0, scorer=scorer)
    assert counts["failed"] == 2
    errors = " ".join(d["last_error"] for d in deliveries(store).values())
    for secret in ("pa55-word-xyz", "tok-abc-123"):
        assert secret not in caplog.text and secret not in errors


def test_abandoned_claim_is_taken_over_after_the_lease(store, scorer, file_only,
                                                       outbox_path):
    settings = make_settings(file_only, quiet_hours="08:00-10:00")
    add_articles(store, "s1", [("A", "Taiwan quake")], T0)
    run_alerts(store, settings, "r1", now=T0, scorer=scorer)  # quiet: held until 10:00
    policy = ledger.RetryPolicy.of(AlertSettings())
    (row,) = ledger.due_deliveries(store, T0 + timedelta(hours=1), policy)
    assert ledger.claim(store, row, "crashed-worker", T0 + timedelta(hours=1), policy)
    counts = run_alerts(store, settings, "r2", now=T0 + timedelta(hours=1, minutes=5),
                        scorer=scorer)
    assert "sent" not in counts  # still within the lease
    counts = run_alerts(store, settings, "r3", now=T0 + timedelta(hours=1, minutes=11),
                        scorer=scorer)
    assert counts["sent"] == 1 and counts["reclaimed-stale"] == 1
    assert len(outbox(outbox_path)) == 1


# ---- digests, roll-ups, quiet hours ------------------------------------------------------------

def test_digest_sends_one_message_per_window_with_rollup(store, scorer, outbox_path,
                                                         http_server):
    http_server.route(HOOK, body="ok")
    channels = {"outbox": {"type": "file", "path": str(outbox_path)},
                "slack": {"type": "slack", "webhook_url": http_server.url(HOOK)}}
    settings = make_settings(channels, mode="digest", digest_at="08:00",
                             timezone="Asia/Taipei", max_per_window=2)
    day1 = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)  # 10:00 in Taipei
    for i in range(3):
        add_articles(store, f"s{i}", [("A", f"Taiwan story {i}")], day1)
    counts = run_alerts(store, settings, "r1", now=day1, scorer=scorer)
    assert counts["new"] == 3 and counts["queued-digest"] == 3 and "sent" not in counts
    assert outbox(outbox_path) == [] and not http_server.requests(HOOK)
    assert {a["status"] for a in list_alerts(store)} == {"queued"}

    day2 = datetime(2024, 5, 2, 0, 5, tzinfo=UTC)  # 08:05 in Taipei
    counts = send_digest(store, settings, "taiwan", now=day2)
    assert counts == {"digest": 1, "digested": 3, "sent": 2}
    (line,) = outbox(outbox_path)
    assert line["type"] == "digest" and line["window"] == "2024-05-02@08:00"
    assert len(line["alerts"]) == 2 and len(line["more"]) == 1 and line["total"] == 3
    (post,) = http_server.requests(HOOK)
    assert "+1 more" in post.text()

    assert run_alerts(store, settings, "r2", now=day2 + timedelta(minutes=30),
                      scorer=scorer) == {"relevant-stories": 3, "score-cached": 3}
    assert send_digest(store, settings, "taiwan", now=day2 + timedelta(hours=1)) == {}
    assert len(outbox(outbox_path)) == 1 and len(http_server.requests(HOOK)) == 1
    statuses = {a["kind"]: a["status"] for a in list_alerts(store)}
    assert statuses == {"digest": "sent", "new": "sent"}


def test_run_sends_a_due_digest_itself(store, scorer, file_only, outbox_path):
    settings = make_settings(file_only, mode="digest", digest_at="08:00")
    add_articles(store, "s1", [("A", "Taiwan story")], T0.replace(hour=7))
    counts = run_alerts(store, settings, "r1", now=T0.replace(hour=7), scorer=scorer)
    assert counts["queued-digest"] == 1 and not outbox(outbox_path)
    counts = run_alerts(store, settings, "r2", now=T0.replace(hour=8, minute=1), scorer=scorer)
    assert counts["digest"] == 1 and counts["sent"] == 1
    assert [line["type"] for line in outbox(outbox_path)] == ["digest"]


def test_max_per_window_rolls_up_the_rest(store, scorer, file_only, outbox_path):
    settings = make_settings(file_only, max_per_window=2)
    for i in range(5):
        add_articles(store, f"s{i}", [("A", f"Taiwan item {i}")], T0)
    counts = run_alerts(store, settings, "r1", now=T0, scorer=scorer)
    assert counts["new"] == 5 and counts["sent"] == 5 and counts["rolled-up"] == 3
    lines = outbox(outbox_path)
    assert [line["type"] for line in lines] == ["alert", "alert", "rollup"]
    assert len(lines[2]["more"]) == 3
    assert {m["title"] for m in lines[2]["more"]} | {lines[0]["title"], lines[1]["title"]} == {
        f"Taiwan item {i}" for i in range(5)}
    run_alerts(store, settings, "r2", now=T0 + timedelta(minutes=5), scorer=scorer)
    assert len(outbox(outbox_path)) == 3
    assert {d["via"] for d in deliveries(store).values()} == {"single", "rollup"}


def test_quiet_hours_defer_then_deliver(store, scorer, file_only, outbox_path):
    settings = make_settings(file_only, quiet_hours="22:00-07:00", timezone="Europe/Berlin")
    night = datetime(2024, 5, 1, 21, 0, tzinfo=UTC)  # 23:00 in Berlin
    add_articles(store, "s1", [("A", "Taiwan midnight news")], night)
    counts = run_alerts(store, settings, "r1", now=night, scorer=scorer)
    assert counts["new"] == 1 and counts["deferred-quiet-hours"] == 1 and "sent" not in counts
    (delivery,) = deliveries(store).values()
    assert delivery["next_attempt_at"] == datetime(2024, 5, 2, 5, 0, tzinfo=UTC)  # 07:00

    later = datetime(2024, 5, 2, 3, 0, tzinfo=UTC)  # 05:00 Berlin: still quiet; story grows
    add_articles(store, "s1", [("B", "Taiwan 2"), ("C", "Taiwan 3"), ("D", "Taiwan 4")], later)
    counts = run_alerts(store, settings, "r2", now=later, scorer=scorer)
    assert counts["refreshed"] == 1 and "update" not in counts and "sent" not in counts

    morning = datetime(2024, 5, 2, 5, 1, tzinfo=UTC)
    counts = run_alerts(store, settings, "r3", now=morning, scorer=scorer)
    assert counts["sent"] == 1
    (line,) = outbox(outbox_path)
    assert line["kind"] == "new" and len(line["sources"]) == 4  # the latest picture


def test_window_helpers():
    watch = WatchConfig(name="w", quiet_hours="22:00-07:00", timezone="UTC", digest_at="08:00")
    assert quiet_until(watch, datetime(2024, 5, 1, 23, 0, tzinfo=UTC)) == datetime(
        2024, 5, 2, 7, 0, tzinfo=UTC)
    assert quiet_until(watch, datetime(2024, 5, 2, 6, 59, tzinfo=UTC)) == datetime(
        2024, 5, 2, 7, 0, tzinfo=UTC)
    assert quiet_until(watch, datetime(2024, 5, 2, 7, 0, tzinfo=UTC)) is None
    day = WatchConfig(name="d", quiet_hours="12:00-13:00")
    assert quiet_until(day, datetime(2024, 5, 2, 12, 30, tzinfo=UTC)) == datetime(
        2024, 5, 2, 13, 0, tzinfo=UTC)
    assert digest_window(watch, datetime(2024, 5, 2, 7, 59, tzinfo=UTC))[0] == "2024-05-01@08:00"
    assert digest_window(watch, datetime(2024, 5, 2, 8, 0, tzinfo=UTC)) == (
        "2024-05-02@08:00", datetime(2024, 5, 2, 8, 0, tzinfo=UTC))


# ---- several workers ---------------------------------------------------------------------------

def add_pending_alerts(url: str, count: int) -> None:
    """``count`` pending alerts (stories s0, s1, ...) on channels a and b, for worker races."""
    setup = open_store(url)
    for i in range(count):
        ledger.create_alert(setup, watch="w", story_id=f"s{i}", kind="new", window_key="once",
                            status="pending", title="t", score=1.0, payload={}, basis={},
                            channels=["a", "b"], now=T0)
    setup.close()


def test_two_claimers_never_take_the_same_row(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    add_pending_alerts(url, 40)
    policy = ledger.RetryPolicy.of(AlertSettings())
    barrier = threading.Barrier(2)
    won: dict[str, list[int]] = {}

    def worker(name: str) -> None:
        store = open_store(url, create=False)
        rows = ledger.due_deliveries(store, T0, policy)
        barrier.wait()
        won[name] = [row["delivery_id"] for row in rows if ledger.claim(store, row, name, T0,
                                                                          policy)]
        store.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not set(won["w0"]) & set(won["w1"])
    assert len(won["w0"]) + len(won["w1"]) == 80


def test_concurrent_runs_send_each_alert_once(tmp_path, scorer, outbox_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    setup = open_store(url)
    for i in range(12):
        add_articles(setup, f"s{i}", [("A", f"Taiwan item {i}")], T0)
    setup.close()
    settings = make_settings({"outbox": {"type": "file", "path": str(outbox_path)}},
                             max_per_window=50)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        store = open_store(url, create=False)
        try:
            barrier.wait()
            run_alerts(store, settings, f"run-{i}", now=T0, scorer=FakeScorer())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    titles = [line["title"] for line in outbox(outbox_path)]
    assert sorted(titles) == sorted(f"Taiwan item {i}" for i in range(12))


# ---- the stage as a whole ----------------------------------------------------------------------

def test_scorer_failure_still_delivers_and_is_reported(store, file_only, outbox_path):
    settings = make_settings(file_only, quiet_hours="08:00-09:30")
    add_articles(store, "s1", [("A", "Taiwan quake")], T0)
    run_alerts(store, settings, "r1", now=T0, scorer=FakeScorer())  # held by quiet hours

    def broken(watch, records):
        raise RuntimeError("model missing")

    add_articles(store, "s2", [("B", "Taiwan aftershock")], T0 + timedelta(hours=1))
    with pytest.raises(AlertStageError, match="model missing"):
        run_alerts(store, settings, "r2", now=T0 + timedelta(hours=1), scorer=broken)
    assert len(outbox(outbox_path)) == 1
    assert store.run_counts("r2")["alerts"] == {"watch-error": 1, "sent": 1, "score-cached": 1}


def test_list_alerts_filters(store, scorer, file_only):
    settings = make_settings(file_only)
    add_articles(store, "s1", [("A", "Taiwan one")], T0)
    run_alerts(store, settings, "r1", now=T0, scorer=scorer)
    add_articles(store, "s2", [("A", "Taiwan two")], T0 + timedelta(hours=2))
    run_alerts(store, settings, "r2", now=T0 + timedelta(hours=2), scorer=scorer)
    assert [a["title"] for a in list_alerts(store)] == ["Taiwan two", "Taiwan one"]
    assert [a["title"] for a in list_alerts(store, since=T0 + timedelta(hours=1))] == [
        "Taiwan two"]
    assert list_alerts(store, watch="other") == []
    (first,) = list_alerts(store, watch="taiwan", since=T0, limit=1)
    assert first["deliveries"][0]["channel"] == "outbox" and first["run_id"] == "r2"


def test_a_broken_watch_does_not_stop_the_others(store, scorer, file_only, outbox_path):
    # Settings reject an unknown zone at load time; model_construct skips that check, as a
    # zone missing from the run-time tz database would.
    bad = WatchConfig.model_construct(name="bad", keywords=["Taiwan"], channels=["outbox"],
                                      timezone="Mars/Olympus")
    settings = Settings(
        watches=[bad, {"name": "taiwan", "keywords": ["Taiwan"], "channels": ["outbox"]}],
        channels=file_only)
    add_articles(store, "s1", [("A", "Taiwan quake")], T0)
    with pytest.raises(AlertStageError, match="unknown time zone 'Mars/Olympus'"):
        run_alerts(store, settings, "r1", now=T0, scorer=scorer)
    assert [line["watch"] for line in outbox(outbox_path)] == ["taiwan"]
