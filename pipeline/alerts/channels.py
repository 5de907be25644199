"""Delivery to email (SMTP), Slack (incoming webhook), the console and a JSONL outbox file.

A channel either delivers every message it is given or raises :class:`DeliveryError`, which
says whether a later retry may help (connection trouble, 4xx SMTP replies, Slack 429/5xx) or
not (bad credentials, a refused recipient, a revoked webhook). Error messages never contain a
secret: passwords and webhook URLs are redacted, and exceptions are not chained into them.

Secrets come from the channel config (``password`` / ``webhook_url``), from the environment
(``password_env`` / ``webhook_url_env``), or from a :data:`SecretResolver` — a callable the
Airflow layer passes in to supply connection values (``smtp_conn_id`` / ``slack_conn_id``)
without anything here importing Airflow.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import re
import smtplib
import ssl
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TextIO

from pipeline.alerts.render import Rendered, one_line
from pipeline.settings import ChannelConfig

log = logging.getLogger(__name__)

# (channel name, its config) -> values that override or complete it: password, webhook_url,
# and for connections also host, port, username, sender, to. None/"" values are ignored.
SecretResolver = Callable[[str, ChannelConfig], Mapping[str, Any] | None]

SECRET_KEYS = ("password", "webhook_url")
_SLACK_HOOK = re.compile(r"https?://hooks\.slack(?:-gov)?\.com/\S+", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@")


class DeliveryError(Exception):
    """A channel could not deliver. ``message`` is safe to log and store (redacted)."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None,
                 sent: int = 0, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked us to wait
        self.sent = sent  # messages delivered before the failure
        self.timed_out = timed_out  # the server did not answer in time: skip it this run


# ---- secrets ---------------------------------------------------------------------------------

def resolve_secrets(name: str, config: ChannelConfig, resolver: SecretResolver | None = None,
                    environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Inline values, then ``*_env`` variables, then whatever ``resolver`` supplies."""
    env = os.environ if environ is None else environ
    secrets: dict[str, Any] = {}
    if config.password:
        secrets["password"] = config.password
    elif config.password_env and env.get(config.password_env):
        secrets["password"] = env[config.password_env]
    if config.webhook_url:
        secrets["webhook_url"] = config.webhook_url
    elif config.webhook_url_env and env.get(config.webhook_url_env):
        secrets["webhook_url"] = env[config.webhook_url_env]
    if resolver is not None:
        try:
            extra = resolver(name, config) or {}
        except Exception as exc:  # its message may hold a secret: only the type is kept
            raise DeliveryError(f"channel {name!r}: secret resolver failed "
                                f"({type(exc).__name__})", retryable=True) from None
        secrets.update({k: v for k, v in extra.items() if v not in (None, "")})
    return secrets


def redact(text: str, secrets: Mapping[str, Any] | None = None) -> str:
    """Remove secret values (and anything shaped like a webhook URL or URL password)."""
    for key in SECRET_KEYS:
        value = (secrets or {}).get(key)
        if isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, "***")
            if key == "webhook_url":  # the token is the path: redact it on its own too
                path = value.split("://", 1)[-1].partition("/")[2]
                if len(path) >= 4:
                    text = text.replace(path, "***")
    text = _SLACK_HOOK.sub("https://hooks.slack.com/***", text)
    return _URL_USERINFO.sub("***@", text)


# ---- dispatch --------------------------------------------------------------------------------

def delivery_key(rendered: Rendered, channel: str) -> str:
    """The ledger's identity of one delivery (the alert(s) + the channel), the same on every
    retry: e-mails carry it as their Message-ID, Slack posts and outbox lines in their
    payload, so a message resent after a crash is recognisably the same one."""
    return f"{rendered.key}/{channel}"


def _timed_out(exc: BaseException | None) -> bool:
    """Whether a failure was the server not answering in time (smtplib reports a silent
    server as SMTPServerDisconnected raised from the socket timeout; urllib as a URLError)."""
    for _ in range(5):
        if exc is None:
            return False
        if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None),
                                                       TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def deliver(config: ChannelConfig, messages: Sequence[Rendered],
            secrets: Mapping[str, Any] | None = None, *, name: str = "channel",
            timeout_s: float = 30.0, slack_max_wait_s: float = 30.0,
            stream: TextIO | None = None, now: datetime | None = None,
            sleep: Callable[[float], None] = time.sleep) -> None:
    """Send ``messages`` (in order) through one channel, or raise :class:`DeliveryError`."""
    secrets = dict(secrets or {})
    now = now or datetime.now(UTC)
    where = f"channel {name!r} ({config.type})"
    try:
        if config.type == "email":
            _send_email(where, name, config, messages, secrets, timeout_s, now)
        elif config.type == "slack":
            _send_slack(where, name, messages, secrets, timeout_s, slack_max_wait_s, sleep)
        elif config.type == "console":
            _send_console(messages, stream or sys.stdout)
        elif config.type == "file":
            _send_file(where, name, config, messages, secrets, now)
        else:  # pragma: no cover - settings validation prevents it
            raise DeliveryError(f"{where}: unknown channel type", retryable=False)
    except DeliveryError as exc:
        exc.message = redact(exc.message, secrets)
        exc.args = (exc.message,)
        raise


# ---- email -----------------------------------------------------------------------------------

def _message_id(key: str, sender: str) -> str:
    """Stable across retries, so a resend after a crash can be de-duplicated by mail clients."""
    domain = re.sub(r"[^A-Za-z0-9.-]", "", sender.rpartition("@")[2]) or "newswatch.local"
    return f"<newswatch.{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}@{domain}>"


def build_email(rendered: Rendered, sender: str, to: Sequence[str], now: datetime,
                channel: str = "email") -> EmailMessage:
    """multipart/alternative: text/plain then text/html; the Message-ID is derived from the
    delivery key, so a retried send is the same message to mail systems."""
    msg = EmailMessage()
    msg["Subject"] = one_line(rendered.subject)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = email.utils.format_datetime(now.astimezone(UTC))
    msg["Message-ID"] = _message_id(delivery_key(rendered, channel), sender)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


def _smtp_reply(exc: smtplib.SMTPResponseException) -> str:
    detail = exc.smtp_error
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return f"{exc.smtp_code} {one_line(detail, 200)}"


def _send_email(where: str, name: str, config: ChannelConfig, messages: Sequence[Rendered],
                secrets: dict[str, Any], timeout_s: float, now: datetime) -> None:
    host = secrets.get("host") or config.host
    port = int(secrets.get("port") or config.port or (465 if config.ssl else
                                                      587 if config.starttls else 25))
    username = secrets.get("username") or config.username
    password = secrets.get("password")
    sender = secrets.get("sender") or config.sender or username
    to = list(secrets.get("to") or config.to)
    if not host:
        raise DeliveryError(f"{where}: no host configured", retryable=False)
    if not sender or not to:
        raise DeliveryError(f"{where}: needs a sender and at least one 'to' address",
                            retryable=False)
    if username and not password:
        hint = (f"environment variable {config.password_env} is not set" if config.password_env
                else "set password or password_env")
        raise DeliveryError(f"{where}: no password ({hint})", retryable=False)

    sent = 0
    try:
        context = ssl.create_default_context()
        smtp = (smtplib.SMTP_SSL(host, port, timeout=timeout_s, context=context) if config.ssl
                else smtplib.SMTP(host, port, timeout=timeout_s))
        with smtp:
            smtp.ehlo()
            if config.starttls and not config.ssl:
                smtp.starttls(context=context)
                smtp.ehlo()
            if username:
                smtp.login(username, password)
            for rendered in messages:
                smtp.send_message(build_email(rendered, sender, to, now, name),
                                  from_addr=sender, to_addrs=to)
                sent += 1
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"{where}: SMTP authentication failed ({exc.smtp_code})",
                            retryable=False, sent=sent) from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise DeliveryError(f"{where}: recipients refused ({', '.join(map(str, codes))})",
                            retryable=all(400 <= c < 500 for c in codes), sent=sent) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"{where}: SMTP error {_smtp_reply(exc)}",
                            retryable=exc.smtp_code < 500, sent=sent) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"{where}: server does not support {one_line(exc, 120)}",
                            retryable=False, sent=sent) from None
    except (smtplib.SMTPException, OSError) as exc:  # refused, timeout, TLS, disconnect
        raise DeliveryError(f"{where}: cannot reach {host}:{port} "
                            f"({type(exc).__name__}: {one_line(exc, 200)})",
                            retryable=True, sent=sent, timed_out=_timed_out(exc)) from None


# ---- slack -----------------------------------------------------------------------------------

def _quiet_logger() -> logging.Logger:
    """slack_sdk logs the webhook URL (a secret) at debug/info level: give it a mute logger."""
    return logging.Logger("pipeline.alerts.slack_sdk", logging.CRITICAL + 1)


def _retry_after(headers: Mapping[str, Any] | None, default: float = 30.0) -> float:
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            value = value[0] if isinstance(value, list) and value else value
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                try:
                    when = email.utils.parsedate_to_datetime(str(value))
                    return max(0.0, (when - datetime.now(UTC)).total_seconds())
                except (TypeError, ValueError):
                    return default
    return default


def _send_slack(where: str, name: str, messages: Sequence[Rendered], secrets: dict[str, Any],
                timeout_s: float, max_wait_s: float, sleep: Callable[[float], None]) -> None:
    from slack_sdk.webhook import WebhookClient

    url = secrets.get("webhook_url")
    if not url:
        raise DeliveryError(f"{where}: no webhook URL (set webhook_url or webhook_url_env)",
                            retryable=False)
    # Retries are ours: 429 waits here (briefly) or later via the ledger; 5xx later.
    client = WebhookClient(url, timeout=max(1, round(timeout_s)), logger=_quiet_logger(),
                           retry_handlers=[])
    for sent, rendered in enumerate(messages):
        waited = 0.0
        while True:
            try:
                response = client.send(
                    text=rendered.fallback, blocks=rendered.blocks, unfurl_links=False,
                    unfurl_media=False, metadata={
                        "event_type": "newswatch_delivery",
                        "event_payload": {"delivery_key": delivery_key(rendered, name)}})
            except Exception as exc:  # URLError, timeouts, refused connections
                raise DeliveryError(f"{where}: request failed ({type(exc).__name__}: "
                                    f"{one_line(exc, 200)})", retryable=True, sent=sent,
                                    timed_out=_timed_out(exc)) from None
            status = response.status_code
            if 200 <= status < 300:
                break
            if status == 429:
                delay = _retry_after(response.headers)
                if waited + delay <= max_wait_s:
                    log.info("%s: rate limited, waiting %.0f s (Retry-After)", where, delay)
                    sleep(delay)
                    waited += delay
                    continue
                raise DeliveryError(f"{where}: rate limited (HTTP 429, Retry-After {delay:.0f} s)",
                                    retryable=True, retry_after=delay, sent=sent)
            body = one_line(response.body, 200)
            raise DeliveryError(f"{where}: HTTP {status} {body}".rstrip(),
                                retryable=status >= 500 or status == 408, sent=sent)


# ---- console and file ------------------------------------------------------------------------

def _send_console(messages: Sequence[Rendered], stream: TextIO) -> None:
    for rendered in messages:
        stream.write("=" * 72 + "\n" + rendered.text)
    stream.flush()


def _send_file(where: str, name: str, config: ChannelConfig, messages: Sequence[Rendered],
               secrets: dict[str, Any], now: datetime) -> None:
    """One JSON object per line, appended and fsynced (the demo's and tests' outbox)."""
    path = secrets.get("path") or config.path
    if not path:
        raise DeliveryError(f"{where}: no path configured", retryable=False)
    lines = [json.dumps({**rendered.record, "channel": name, "sent_at": now.isoformat(),
                         "delivery_key": delivery_key(rendered, name)},
                        ensure_ascii=False, default=str) + "\n" for rendered in messages]
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise DeliveryError(f"{where}: cannot write {path} ({type(exc).__name__})",
                            retryable=True) from None
