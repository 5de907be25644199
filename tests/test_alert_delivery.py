"""Alert channels against real local servers: SMTP (aiosmtpd) and a Slack webhook (HTTP)."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
import threading
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from pipeline.alerts.channels import DeliveryError, deliver, redact, resolve_secrets
from pipeline.alerts.render import (
    AlertMessage,
    render_digest,
    render_html,
    render_message,
    render_slack_blocks,
    render_text,
)
from pipeline.settings import ChannelConfig
from tests.support.httpserver import Response

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

HOSTILE = '<script>alert(1)</script> & "quotes"'
NOW = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


# ---- a local SMTP server -----------------------------------------------------------------------

class _Controller(Controller):
    """aiosmtpd's Controller, on an ephemeral port (it cannot probe port 0 itself)."""

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SMTPSink:
    """Receives mail on 127.0.0.1; optionally requires AUTH (without TLS, for tests)."""

    def __init__(self, port: int = 0, credentials: tuple[str, str] | None = None) -> None:
        self.envelopes: list = []
        self.logins: list[tuple[str, bool]] = []
        self._lock = threading.Lock()
        self._credentials = credentials
        kwargs = {}
        if credentials is not None:
            kwargs = {"authenticator": self._authenticate, "auth_require_tls": False,
                      "auth_required": True}
        self.controller = _Controller(self, hostname="127.0.0.1", port=port, **kwargs)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
        with self._lock:
            self.envelopes.append(envelope)
        return "250 OK"

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and self._credentials is not None
              and (auth_data.login.decode(), auth_data.password.decode()) == self._credentials)
        with self._lock:
            self.logins.append((auth_data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)

    @property
    def port(self) -> int:
        return self.controller.port

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return [email.message_from_bytes(e.original_content, policy=email.policy.default)
                    for e in self.envelopes]

    def __enter__(self) -> SMTPSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp():
    with SMTPSink() as sink:
        yield sink


def hostile_message(**overrides) -> AlertMessage:
    values = dict(
        watch="taiwan", kind="new", story_id="s1", title=HOSTILE,
        sources=[("Harbor <b>Post</b>", "https://harbor.example/a?x=1&y=2"),
                 ("Evil & Co", "javascript:alert(2)")],
        first_seen=datetime(2024, 5, 1, 8, 0, tzinfo=UTC),
        summary='<p>Drills <img src=x onerror="alert(3)"> near <b>Taiwan</b> &amp; more</p>',
        reasons=["keyword <Taiwan> in title", "<@U123> & <!channel>"], article_count=3,
        score=0.91, alert_id=7)
    values.update(overrides)
    return AlertMessage(**values)


def email_channel(port: int, **extra) -> ChannelConfig:
    return ChannelConfig(type="email", host="127.0.0.1", port=port, sender="alerts@newswatch.test",
                         to=["desk@example.org", "ops@example.org"], **extra)


# ---- rendering ---------------------------------------------------------------------------------

def test_text_keeps_the_title_and_drops_markup_from_summaries():
    text = render_text(hostile_message())
    assert f"New story: {HOSTILE}" in text
    assert "onerror" not in text and "<p>" not in text
    assert "Drills near Taiwan & more" in text
    assert "https://harbor.example/a?x=1&y=2" in text
    assert "javascript:" not in text  # not a link we would show


def test_html_escapes_every_feed_string():
    page = render_html(hostile_message())
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&amp; &quot;quotes&quot;" in page
    assert "onerror" not in page and "<img" not in page
    assert "javascript:" not in page
    assert 'href="https://harbor.example/a?x=1&amp;y=2"' in page
    assert "Harbor &lt;b&gt;Post&lt;/b&gt;" in page
    assert "keyword &lt;Taiwan&gt; in title" in page


def test_slack_blocks_escape_mrkdwn():
    blocks = render_slack_blocks(hostile_message())
    dump = json.dumps(blocks)
    assert "<script>" not in dump and "<!channel>" not in dump and "<@U123>" not in dump
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in dump
    assert "&lt;@U123&gt; &amp; &lt;!channel&gt;" in dump
    section = blocks[1]["text"]["text"]
    assert "<https://harbor.example/a?x=1&amp;y=2|" in section  # our own link, escaped
    assert "javascript" not in dump
    assert blocks[0]["type"] == "header" and len(blocks[0]["text"]["text"]) <= 150


def test_digest_lists_the_rest_as_more():
    messages = [hostile_message(story_id=f"s{i}", title=f"Story {i}", alert_id=i)
                for i in range(5)]
    rendered = render_digest("taiwan", messages, limit=2, window="2024-05-02@08:00")
    assert "Story 0" in rendered.text and "Story 1" in rendered.text
    assert "+3 more:" in rendered.text
    for i in (2, 3, 4):
        assert f"New story: Story {i}" in rendered.text.split("+3 more:")[1]
    assert rendered.record["total"] == 5 and len(rendered.record["more"]) == 3
    assert "+3 more" in json.dumps(rendered.blocks)
    rollup = render_digest("taiwan", messages, limit=0)
    assert rollup.subject == "[newswatch] +5 more alerts for taiwan"
    assert rollup.record["type"] == "rollup" and len(rollup.record["more"]) == 5


# ---- email ------------------------------------------------------------------------------------

def test_email_has_headers_both_parts_and_escaping(smtp):
    deliver(email_channel(smtp.port), [render_message(hostile_message())], name="mail", now=NOW)
    (msg,) = smtp.messages
    assert msg["Subject"] == f"[newswatch] taiwan: New story: {HOSTILE}"
    assert msg["From"] == "alerts@newswatch.test"
    assert msg["To"] == "desk@example.org, ops@example.org"
    assert msg["Message-ID"].startswith("<newswatch.") and msg["Message-ID"].endswith(
        "@newswatch.test>")
    assert email.utils.parsedate_to_datetime(msg["Date"]) == NOW
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",)).get_content()
    page = msg.get_body(("html",)).get_content()
    assert HOSTILE in plain
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert sorted(smtp.envelopes[0].rcpt_tos) == ["desk@example.org", "ops@example.org"]


def test_message_id_is_stable_across_retries(smtp):
    rendered = render_message(hostile_message())
    config = email_channel(smtp.port)
    deliver(config, [rendered], name="mail", now=NOW)
    deliver(config, [rendered], name="mail", now=NOW)
    first, second = smtp.messages
    assert first["Message-ID"] == second["Message-ID"]


def test_email_auth_with_password_from_environment(monkeypatch):
    monkeypatch.setenv("NW_TEST_SMTP_PASSWORD", "s3cret-pass")
    config = email_channel(0, username="newswatch", password_env="NW_TEST_SMTP_PASSWORD")
    with SMTPSink(credentials=("newswatch", "s3cret-pass")) as sink:
        config = config.model_copy(update={"port": sink.port})
        deliver(config, [render_message(hostile_message())],
                resolve_secrets("mail", config), name="mail", now=NOW)
        assert sink.logins == [("newswatch", True)]
        assert len(sink.messages) == 1


def test_email_bad_password_is_permanent_and_redacted():
    config = email_channel(0, username="newswatch", password="wrong-pass-123")
    with SMTPSink(credentials=("newswatch", "right-pass")) as sink:
        config = config.model_copy(update={"port": sink.port})
        with pytest.raises(DeliveryError) as caught:
            deliver(config, [render_message(hostile_message())],
                    resolve_secrets("mail", config), name="mail", now=NOW)
        assert not sink.envelopes
    assert caught.value.retryable is False
    assert "authentication failed" in caught.value.message
    assert "wrong-pass-123" not in str(caught.value)


def test_missing_password_env_names_the_variable_not_a_value(monkeypatch):
    monkeypatch.delenv("NW_UNSET_PASSWORD", raising=False)
    config = email_channel(25, username="u", password_env="NW_UNSET_PASSWORD")
    with pytest.raises(DeliveryError) as caught:
        deliver(config, [render_message(hostile_message())], resolve_secrets("mail", config),
                name="mail")
    assert caught.value.retryable is False and "NW_UNSET_PASSWORD" in caught.value.message


def test_smtp_server_down_is_retryable():
    with pytest.raises(DeliveryError) as caught:
        deliver(email_channel(free_port()), [render_message(hostile_message())], name="mail",
                timeout_s=2)
    assert caught.value.retryable is True and "cannot reach 127.0.0.1" in caught.value.message


# ---- slack ------------------------------------------------------------------------------------

HOOK = "/services/T0001/B0002/sEcReTt0kEn42"


def slack(http_server) -> tuple[ChannelConfig, dict]:
    config = ChannelConfig(type="slack", webhook_url_env="NW_TEST_SLACK_URL")
    return config, {"webhook_url": http_server.url(HOOK)}


def test_slack_posts_escaped_blocks(http_server):
    http_server.route(HOOK, body="ok")
    config, secrets = slack(http_server)
    deliver(config, [render_message(hostile_message())], secrets, name="slack")
    (request,) = http_server.requests(HOOK)
    body = request.json()
    assert request.method == "POST" and request.headers["content-type"].startswith(
        "application/json")
    assert body["blocks"][0]["type"] == "header"
    assert "<script>" not in request.text() and "<!channel>" not in request.text()
    assert "&lt;script&gt;" in body["text"]
    assert body["unfurl_links"] is False


def test_slack_5xx_is_retryable(http_server):
    http_server.route(HOOK, status=500, body="internal_error")
    config, secrets = slack(http_server)
    with pytest.raises(DeliveryError) as caught:
        deliver(config, [render_message(hostile_message())], secrets, name="slack")
    assert caught.value.retryable is True and "HTTP 500" in caught.value.message


def test_slack_4xx_is_permanent(http_server):
    http_server.route(HOOK, status=404, body="no_service")
    config, secrets = slack(http_server)
    with pytest.raises(DeliveryError) as caught:
        deliver(config, [render_message(hostile_message())], secrets, name="slack")
    assert caught.value.retryable is False and "no_service" in caught.value.message


def test_slack_429_waits_for_retry_after(http_server):
    http_server.route(HOOK, [Response(status=429, body="rate_limited",
                                      headers={"Retry-After": "2"}),
                             Response(body="ok")])
    config, secrets = slack(http_server)
    slept: list[float] = []
    deliver(config, [render_message(hostile_message())], secrets, name="slack",
            sleep=slept.append)
    assert slept == [2.0]
    assert len(http_server.requests(HOOK)) == 2


def test_slack_429_real_wait_is_honoured(http_server):
    http_server.route(HOOK, [Response(status=429, headers={"Retry-After": "1"}),
                             Response(body="ok")])
    config, secrets = slack(http_server)
    deliver(config, [render_message(hostile_message())], secrets, name="slack")
    first, second = http_server.requests(HOOK)
    assert second.at - first.at >= 0.95


def test_slack_long_retry_after_is_left_to_a_later_run(http_server):
    http_server.route(HOOK, status=429, headers={"Retry-After": "600"})
    config, secrets = slack(http_server)
    with pytest.raises(DeliveryError) as caught:
        deliver(config, [render_message(hostile_message())], secrets, name="slack",
                slack_max_wait_s=5, sleep=pytest.fail)
    assert caught.value.retryable is True and caught.value.retry_after == 600


def test_slack_unreachable_is_retryable_and_hides_the_url():
    url = f"http://127.0.0.1:{free_port()}{HOOK}"
    with pytest.raises(DeliveryError) as caught:
        deliver(ChannelConfig(type="slack"), [render_message(hostile_message())],
                {"webhook_url": url}, name="slack", timeout_s=2)
    assert caught.value.retryable is True
    assert "sEcReTt0kEn42" not in caught.value.message


def test_slack_sdk_logs_never_show_the_webhook(http_server, caplog):
    caplog.set_level(logging.DEBUG)
    http_server.route(HOOK, [Response(status=429, headers={"Retry-After": "0"}),
                             Response(status=503, body=f"echo {HOOK}")])
    config, secrets = slack(http_server)
    with pytest.raises(DeliveryError) as caught:
        deliver(config, [render_message(hostile_message())], secrets, name="slack")
    assert "sEcReTt0kEn42" not in caught.value.message
    assert "sEcReTt0kEn42" not in caplog.text


# ---- console, file, secrets -------------------------------------------------------------------

def test_console_prints_text(capsys):
    deliver(ChannelConfig(type="console"), [render_message(hostile_message())], name="console")
    assert f"New story: {HOSTILE}" in capsys.readouterr().out


def test_file_appends_json_lines(tmp_path):
    path = tmp_path / "out" / "outbox.jsonl"
    config = ChannelConfig(type="file", path=str(path))
    deliver(config, [render_message(hostile_message())], name="outbox", now=NOW)
    deliver(config, [render_message(hostile_message(story_id="s2"))], name="outbox", now=NOW)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["story_id"] for line in lines] == ["s1", "s2"]
    assert lines[0]["title"] == HOSTILE and lines[0]["channel"] == "outbox"
    assert lines[0]["sources"][0] == {"name": "Harbor <b>Post</b>",
                                      "url": "https://harbor.example/a?x=1&y=2"}


def test_resolver_supplies_connection_values_and_its_errors_stay_secret():
    config = ChannelConfig(type="email", smtp_conn_id="smtp_default", password="inline")

    def resolver(name, channel):
        assert name == "mail" and channel.smtp_conn_id == "smtp_default"
        return {"host": "smtp.example.org", "password": "from-conn", "username": None}

    assert resolve_secrets("mail", config, resolver) == {"password": "from-conn",
                                                         "host": "smtp.example.org"}

    def broken(name, channel):
        raise RuntimeError("could not decrypt hunter2")

    with pytest.raises(DeliveryError) as caught:
        resolve_secrets("mail", config, broken)
    assert "hunter2" not in caught.value.message and caught.value.retryable


def test_redact_removes_secrets_and_webhook_shapes():
    text = ("pw=hunter22 url=https://hooks.slack.com/services/T/B/xyz "
            "path=/services/T9/B9/tok9 https://user:pw@host/x")
    clean = redact(text, {"password": "hunter22",
                          "webhook_url": "http://127.0.0.1:1/services/T9/B9/tok9"})
    assert "hunter22" not in clean and "xyz" not in clean and "tok9" not in clean
    assert "user:pw@" not in clean
