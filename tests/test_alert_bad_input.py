"""Alert delivery under faults: the duplicate window is narrowed (one delivery key per alert
and channel, in every message), a crashed run's claims come back at once, and a channel
that times out costs one timeout per run. Local SMTP/HTTP servers only."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from pipeline.alerts import engine
from pipeline.alerts.engine import run_alerts
from pipeline.records import alerts as ledger
from pipeline.settings import AlertSettings, Settings
from tests.support.factories import with_alerts
from tests.support.httpserver import Response
from tests.test_alert_delivery import SMTPSink
from tests.test_alert_engine import (
    HOOK,
    T0,
    FakeScorer,
    add_articles,
    deliveries,
    make_settings,
    outbox,
)

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def mail_channel(port: int) -> dict:
    return {"type": "email", "host": "127.0.0.1", "port": port, "sender": "nw@example.org",
            "to": ["desk@example.org"]}


def test_every_message_carries_its_delivery_key(store, tmp_path, http_server):
    http_server.route(HOOK, body="ok")
    path = tmp_path / "outbox.jsonl"
    with SMTPSink() as smtp:
        settings = make_settings({"outbox": {"type": "file", "path": str(path)},
                                  "mail": mail_channel(smtp.port),
                                  "mail2": mail_channel(smtp.port),
                                  "slack": {"type": "slack",
                                            "webhook_url": http_server.url(HOOK)}})
        add_articles(store, "s1", [("Harbor Post", "Taiwan ferry strike")], T0)
        assert run_alerts(store, settings, "r1", now=T0, scorer=FakeScorer())["sent"] == 4
        ids = sorted(m["Message-ID"] for m in smtp.messages)
    (line,) = outbox(path)
    key = line["delivery_key"]
    assert key.startswith("taiwan/new/s1/") and key.endswith("/outbox")
    slack = http_server.requests(HOOK)[0].json()
    assert slack["metadata"]["event_payload"]["delivery_key"] == key.replace("/outbox",
                                                                             "/slack")
    assert len(set(ids)) == 2  # one per (alert, channel), not one per alert


def test_a_resend_after_a_crash_is_the_same_message(store, monkeypatch):
    """The crash window: the server accepted, the ledger did not yet say sent."""
    with SMTPSink() as smtp:
        settings = make_settings({"mail": mail_channel(smtp.port)})
        add_articles(store, "s1", [("Harbor Post", "Taiwan ferry strike")], T0)
        real_mark_sent = ledger.mark_sent
        monkeypatch.setattr(ledger, "mark_sent",
                            lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash")))
        with pytest.raises(engine.AlertStageError):
            run_alerts(store, settings, "r1", now=T0, scorer=FakeScorer())
        monkeypatch.setattr(ledger, "mark_sent", real_mark_sent)
        later = T0 + timedelta(seconds=settings.alerts.stale_claim_s + 1)
        counts = run_alerts(store, settings, "r2", now=later, scorer=FakeScorer())
        assert counts["reclaimed-stale"] == 1 and counts["sent"] == 1
        first, second = smtp.messages
    assert first["Message-ID"] == second["Message-ID"]


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def claim_as(store, worker: str, at) -> None:
    (row,) = ledger.due_deliveries(store, at, ledger.RetryPolicy.of(AlertSettings()))
    assert ledger.claim(store, row, worker, at, ledger.RetryPolicy.of(AlertSettings()))


def quiet_alert(store, settings: Settings) -> None:
    """One alert held by quiet hours (08:00-10:00), so a test can claim it by hand."""
    add_articles(store, "s1", [("A", "Taiwan quake")], T0)
    run_alerts(store, settings, "r1", now=T0, scorer=FakeScorer())


def test_claims_of_a_dead_process_are_taken_over_at_once(store, tmp_path):
    settings = make_settings({"outbox": {"type": "file", "path": str(tmp_path / "o.jsonl")}},
                             quiet_hours="08:00-10:00")
    quiet_alert(store, settings)
    at = T0 + timedelta(hours=1)
    claim_as(store, f"{socket.gethostname()[:32]}:{dead_pid()}:deadbeef", at)
    counts = run_alerts(store, settings, "r2", now=at + timedelta(seconds=5),
                        scorer=FakeScorer())
    assert counts["sent"] == 1 and counts["reclaimed-stale"] == 1  # not 600 s later
    assert len(outbox(tmp_path / "o.jsonl")) == 1


def test_claims_of_a_live_or_remote_worker_wait_for_the_lease(store, tmp_path):
    settings = make_settings({"outbox": {"type": "file", "path": str(tmp_path / "o.jsonl")}},
                             quiet_hours="08:00-10:00")
    quiet_alert(store, settings)
    at = T0 + timedelta(hours=1)
    claim_as(store, "another-host:1:cafe", at)
    counts = run_alerts(store, settings, "r2", now=at + timedelta(seconds=5),
                        scorer=FakeScorer())
    assert "sent" not in counts


def test_stale_claim_s_is_a_setting(store, tmp_path):
    settings = make_settings({"outbox": {"type": "file", "path": str(tmp_path / "o.jsonl")}},
                             quiet_hours="08:00-10:00")
    settings.alerts.stale_claim_s = 60
    quiet_alert(store, settings)
    at = T0 + timedelta(hours=1)
    claim_as(store, "another-host:1:cafe", at)
    counts = run_alerts(store, settings, "r2", now=at + timedelta(seconds=61),
                        scorer=FakeScorer())
    assert counts["sent"] == 1 and counts["reclaimed-stale"] == 1


class SilentServer:
    """Accepts TCP connections and never says a word (an SMTP server that never greets)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_channel_that_times_out_is_skipped_for_the_rest_of_the_run(store, tmp_path):
    path = tmp_path / "o.jsonl"
    with SilentServer() as silent:
        settings = make_settings({"mail": mail_channel(silent.port),
                                  "outbox": {"type": "file", "path": str(path)}})
        for n in range(4):
            add_articles(store, f"s{n}", [("A", f"Taiwan report {n}")], T0)
        counts = run_alerts(store, with_alerts(settings, smtp_timeout_s=0.5), "r1", now=T0,
                            scorer=FakeScorer())
        # One connection, one timeout: the other three alerts never tried the dead channel
        # (counted, not timed, so a loaded machine cannot fail it).
        assert len(silent.accepted) == 1
    assert counts["failed"] == 1 and counts["skipped-channel-down"] == 3
    assert len(outbox(path)) == 4  # the other channel delivered everything
    mail = [d for (_, channel), d in deliveries(store).items() if channel == "mail"]
    assert sorted(d["status"] for d in mail) == ["failed", "pending", "pending", "pending"]
    with SMTPSink() as smtp:  # the next run delivers what waited
        settings.channels["mail"].port = smtp.port
        counts = run_alerts(store, settings, "r2", now=T0 + timedelta(minutes=5),
                            scorer=FakeScorer())
        assert counts["sent"] == 4 and len(smtp.messages) == 4


def test_slack_timeout_also_opens_the_circuit(store, http_server):
    http_server.route(HOOK, Response(body="ok", delay_s=3))
    settings = make_settings({"slack": {"type": "slack", "webhook_url": http_server.url(HOOK)}})
    for n in range(3):
        add_articles(store, f"s{n}", [("A", f"Taiwan report {n}")], T0)
    counts = run_alerts(store, with_alerts(settings, smtp_timeout_s=1), "r1", now=T0,
                        scorer=FakeScorer())
    assert counts["failed"] == 1 and counts["skipped-channel-down"] == 2
    assert len(http_server.requests(HOOK)) == 1


# ---- one story's failure is its own ------------------------------------------------------------

class ChokingScorer(FakeScorer):
    """FakeScorer that raises on any batch holding a title with 'Boom' (a text the model
    cannot take), as a real scorer raises for the whole batch."""

    def __call__(self, watch, records):
        if any("Boom" in r["title"] for r in records):
            raise ValueError("cannot score this text")
        return super().__call__(watch, records)


def test_a_story_whose_scoring_raises_costs_only_itself(store, tmp_path):
    from tests.test_alert_engine import T0 as start

    path = tmp_path / "outbox.jsonl"
    settings = make_settings({"outbox": {"type": "file", "path": str(path)}})
    add_articles(store, "s1", [("A", "Taiwan Boom report")], start)
    add_articles(store, "s2", [("B", "Taiwan strait patrol")], start)
    counts = run_alerts(store, settings, "r1", now=start, scorer=ChokingScorer())  # no raise
    assert counts["item-error"] == 1 and counts["new"] == 1
    assert store.run_counts("r1")["alerts"]["item-error"] == 1
    assert [line["title"] for line in outbox(path)] == ["Taiwan strait patrol"]
    # Scored again on the next run (nothing cached for it), and alerted once it can be.
    counts = run_alerts(store, settings, "r2", now=start + timedelta(minutes=5),
                        scorer=FakeScorer())
    assert counts["new"] == 1 and "item-error" not in counts
    assert sorted(line["title"] for line in outbox(path)) == [
        "Taiwan Boom report", "Taiwan strait patrol"]


def test_a_story_whose_message_cannot_be_rendered_costs_only_itself(store, tmp_path,
                                                                      monkeypatch):
    from tests.test_alert_engine import T0 as start

    path = tmp_path / "outbox.jsonl"
    settings = make_settings({"outbox": {"type": "file", "path": str(path)}})
    add_articles(store, "s1", [("A", "Taiwan quake")], start)
    add_articles(store, "s2", [("B", "Taiwan election")], start)
    real_message = engine._message

    def message(store_, watch, kind, story, *args, **kwargs):
        if story["story_id"] == "s1":
            raise KeyError("template field")
        return real_message(store_, watch, kind, story, *args, **kwargs)

    monkeypatch.setattr(engine, "_message", message)
    counts = run_alerts(store, settings, "r1", now=start, scorer=FakeScorer())
    assert counts["item-error"] == 1 and counts["new"] == 1 and counts["sent"] == 1
    assert [line["title"] for line in outbox(path)] == ["Taiwan election"]
    assert len(ledger.list_alerts(store)) == 1  # nothing half-made for s1
