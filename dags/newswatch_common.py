"""Shared bits of the newswatch DAGs: task settings, task defaults, secrets, failure notices.

Cheap to import (DAG parsing): only the standard library at module level; Airflow's Task SDK
and the pipeline are imported inside the functions that need them.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger("newswatch.airflow")

FETCH_POOL = "newswatch_fetch"


def _config_variable() -> str | None:
    """The Airflow Variable ``newswatch_config`` (None when unset or unreachable)."""
    from pipeline.settings import AIRFLOW_CONFIG_VARIABLE

    try:
        from airflow.sdk import Variable

        return Variable.get(AIRFLOW_CONFIG_VARIABLE, default=None)
    except Exception:  # no Variable backend reachable: the other sources decide
        log.debug("Variable %s unavailable", AIRFLOW_CONFIG_VARIABLE, exc_info=True)
        return None


def parse_time_settings() -> Settings:
    """Settings for what a DAG file needs when it is parsed (``airflow.schedule``): from
    ``$NEWSWATCH_CONFIG`` and the environment only (no Variable, no connection: parsing must
    stay cheap). A broken config leaves the defaults here; the tasks then fail with the
    reason and send the failure notice."""
    from pipeline.settings import AirflowSettings, ConfigError, Settings, resolve_settings

    try:
        return resolve_settings()
    except ConfigError as exc:
        log.error("newswatch config unreadable at parse time (defaults used): %s", exc)
        return Settings(airflow=AirflowSettings())


def task_settings() -> Settings:
    """This task's newswatch settings: :func:`pipeline.settings.resolve_settings` with the
    Airflow Variable ``newswatch_config`` as one source of the config path, and the
    Elasticsearch connection (:func:`search_connection_values`) as the ``search`` section
    above the file and below the environment. Call only inside a running task."""
    from pipeline.settings import resolve_settings

    settings = resolve_settings(airflow_variable=_config_variable)
    values = search_connection_values(settings)
    if not values:
        return settings
    return resolve_settings(airflow_variable=_config_variable, connection={"search": values})


def dag_run_id() -> str:
    """The current Airflow dag run id (inside a running task)."""
    from airflow.sdk import get_current_context

    return str(get_current_context()["run_id"])


# ---- secrets from Airflow connections ---------------------------------------------------------

def _slack_webhook(conn: Any) -> str | None:
    """A Slack incoming-webhook URL from a connection (``slackwebhook`` style): the password
    holds the full URL or the token path, the host the base URL."""
    extra = getattr(conn, "extra_dejson", {}) or {}
    token = conn.password or extra.get("webhook_token") or extra.get("webhook_url")
    if not token:
        return None
    if token.startswith(("http://", "https://")):
        return token
    base = (conn.host or "https://hooks.slack.com/services").rstrip("/")
    if not base.startswith(("http://", "https://")):
        base = "https://" + base
    return f"{base}/{token.lstrip('/')}"


def resolver(name: str, channel: Any) -> Mapping[str, Any] | None:
    """pipeline.alerts SecretResolver: values of the channel's Airflow connection.

    ``smtp_conn_id`` → password (and host, port, username, sender when set there);
    ``slack_conn_id`` → webhook_url. Channels without a connection id get nothing.
    """
    smtp_id = getattr(channel, "smtp_conn_id", None)
    slack_id = getattr(channel, "slack_conn_id", None)
    if not smtp_id and not slack_id:
        return None
    from airflow.sdk import BaseHook

    if smtp_id:
        conn = BaseHook.get_connection(smtp_id)
        extra = conn.extra_dejson or {}
        return {"password": conn.password, "host": conn.host, "port": conn.port,
                "username": conn.login, "sender": extra.get("from_email")}
    conn = BaseHook.get_connection(slack_id)
    return {"webhook_url": _slack_webhook(conn)}


def _search_values(conn: Any) -> dict[str, Any]:
    """``search.*`` settings from an Elasticsearch connection, read the way Airflow's
    Elasticsearch provider reads it: ``host`` (or a full ``http(s)://`` URL in it), ``port``
    (9200), ``schema`` = ``http``/``https`` (default ``http``), ``login``/``password``; extras
    ``api_key``, ``verify_certs``, ``ca_certs``."""
    extra = getattr(conn, "extra_dejson", {}) or {}
    host = (conn.host or "").strip().rstrip("/")
    if host.lower().startswith(("http://", "https://")):
        url = host
    elif host:
        scheme = str(conn.schema or extra.get("scheme") or "http").lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"elasticsearch connection {conn.conn_id!r}: schema must be "
                             f"http or https (got {scheme!r})")
        url = f"{scheme}://{host}:{conn.port or 9200}"
    else:
        url = None
    return {"url": url, "username": conn.login, "password": conn.password,
            "api_key": extra.get("api_key"), "verify_certs": extra.get("verify_certs"),
            "ca_certs": extra.get("ca_certs")}


def search_connection_values(settings: Settings) -> dict[str, Any]:
    """``search.*`` values of the Airflow connection named by ``search.elasticsearch_conn_id``
    (``$NEWSWATCH_SEARCH__ELASTICSEARCH_CONN_ID``); ``{}`` when none is named. Secrets stay
    in memory: nothing lands in the config, the environment or XCom. A named connection that
    does not exist fails the task."""
    conn_id = (settings.search.elasticsearch_conn_id or "").strip()
    if not conn_id:
        return {}
    from airflow.sdk import BaseHook

    return {key: value for key, value in _search_values(BaseHook.get_connection(conn_id)).items()
            if value is not None and value != ""}


# ---- failure notices (a channel separate from topic alerts) -----------------------------------

def _failure_message(context: Mapping[str, Any]) -> tuple[str, str]:
    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        task_id = f"{task_id}[{map_index}]"
    error = context.get("exception")
    subject = f"newswatch pipeline failure: {dag_id}.{task_id}"
    text = (f"{subject}\nrun: {context.get('run_id', '?')}\n"
            f"try: {getattr(ti, 'try_number', '?')}\n"
            f"error: {type(error).__name__ if error else '?'}: {str(error)[:500]}")
    return subject, text


def _rendered(subject: str, text: str) -> Any:
    from pipeline.alerts.render import Rendered

    esc = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return Rendered(
        subject=subject, text=text,
        html=f"<html><body><pre>{html.escape(text)}</pre></body></html>",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": f"```{esc}```"}}],
        fallback=esc.splitlines()[0] if esc else subject,
        record={"kind": "pipeline-failure", "subject": subject, "text": text},
        key=f"failure:{subject}:{text[:200]}",
    )


def notify_failure(context: Mapping[str, Any]) -> None:
    """on_failure_callback: post the failure to ``airflow.failure_channel`` (a channel in the
    newswatch config, not a watch's), else log it. Never raises."""
    try:
        subject, text = _failure_message(context)
    except Exception:  # pragma: no cover - defensive
        subject, text = "newswatch pipeline failure", "newswatch pipeline failure"
    log.error("%s", text)
    name = None
    try:
        from pipeline.alerts.channels import deliver, resolve_secrets

        settings = task_settings()
        name = settings.airflow.failure_channel
        if not name:
            return
        channel = settings.channels.get(name)
        if channel is None:
            log.error("failure channel %r is not configured; notice only logged", name)
            return
        secrets = resolve_secrets(name, channel, resolver)
        deliver(channel, [_rendered(subject, text)], secrets, name=name)
    except Exception as exc:  # a broken notifier must not hide the original failure
        log.error("could not post the failure notice to %r: %s", name, type(exc).__name__)


DEFAULT_ARGS: dict[str, Any] = {
    "owner": "newswatch",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
    "execution_timeout": timedelta(minutes=30),
    "on_failure_callback": notify_failure,
}
