"""Fetcher against a real local HTTP server: outcomes, limits, redirects, politeness."""

from __future__ import annotations

import gzip
import itertools
import socket
import threading
import time
import zlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import brotli
import httpcore
import pytest

from pipeline.fetcher import OUTCOMES, Fetcher, FetchResult, host_key, parse_retry_after
from pipeline.netguard import AddressPolicy
from pipeline.settings import FetchSettings
from tests.support.httpserver import RecordedRequest, Response

LOOPBACK_ONLY = AddressPolicy.create(allowed_networks=["127.0.0.0/8"])


def settings(**overrides) -> FetchSettings:
    values = {"timeout_s": 0.5, "deadline_s": 1.5, "max_bytes": 200_000,
              "allow_private_networks": True, "max_redirects": 3}
    values.update(overrides)
    return FetchSettings(**values)


class SpyBackend(httpcore.NetworkBackend):
    """The real socket backend, recording every address a connection was opened to."""

    def __init__(self) -> None:
        self.inner = httpcore.SyncBackend()
        self.addresses: list[str] = []

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.addresses.append(host)
        return self.inner.connect_tcp(host, port, timeout=timeout, local_address=local_address,
                                      socket_options=socket_options)


@pytest.fixture
def fetcher():
    with Fetcher(settings()) as f:
        yield f


# ---- plain outcomes ------------------------------------------------------------------------


def test_ok_returns_body_headers_and_sends_identity(http_server, fetcher):
    http_server.route("/feed", body="<rss/>", headers={"Content-Type": "application/rss+xml",
                                                       "X-Thing": "1"})
    result = fetcher.get(http_server.url("/feed"), accept="application/rss+xml")
    assert isinstance(result, FetchResult)
    assert (result.outcome, result.status, result.content) == ("ok", 200, b"<rss/>")
    assert result.ok and result.error is None and result.redirects == []
    assert result.headers["content-type"] == "application/rss+xml"
    assert result.headers["x-thing"] == "1"
    assert result.url == http_server.url("/feed") and result.elapsed_s > 0
    sent = http_server.requests("/feed")[0].headers
    assert sent["user-agent"] == FetchSettings().user_agent
    assert sent["accept"] == "application/rss+xml"
    assert "gzip" in sent["accept-encoding"] and "deflate" in sent["accept-encoding"]
    assert "if-none-match" not in sent and "if-modified-since" not in sent


def test_conditional_get_sends_validators_and_304_is_not_modified(http_server, fetcher):
    def handler(request: RecordedRequest) -> Response:
        if request.headers.get("if-none-match") == '"v1"':
            return Response(status=304, headers={"ETag": '"v1"'})
        return Response(body="full", headers={"ETag": '"v1"'})

    http_server.route("/feed", handler)
    first = fetcher.get(http_server.url("/feed"))
    second = fetcher.get(http_server.url("/feed"), etag=first.headers["etag"],
                         last_modified="Wed, 01 Jan 2025 00:00:00 GMT")
    assert (first.outcome, second.outcome, second.status) == ("ok", "not-modified", 304)
    assert second.content == b"" and not second.ok
    sent = http_server.requests("/feed")[1].headers
    assert sent["if-none-match"] == '"v1"'
    assert sent["if-modified-since"] == "Wed, 01 Jan 2025 00:00:00 GMT"


@pytest.mark.parametrize("status", [400, 403, 404, 410, 500, 502])
def test_error_statuses_are_http_errors(http_server, fetcher, status):
    http_server.route("/x", status=status, body="nope")
    result = fetcher.get(http_server.url("/x"))
    assert (result.outcome, result.status) == ("http-error", status)
    assert str(status) in result.error and result.content == b""


def test_429_with_seconds_is_rate_limited(http_server, fetcher):
    http_server.route("/x", status=429, headers={"Retry-After": "120"})
    result = fetcher.get(http_server.url("/x"))
    assert (result.outcome, result.status, result.retry_after_s) == ("rate-limited", 429, 120.0)


def test_503_with_http_date_is_rate_limited(http_server, fetcher):
    when = datetime.now(UTC) + timedelta(seconds=600)
    http_server.route("/x", status=503, headers={"Retry-After": format_datetime(when, True)})
    result = fetcher.get(http_server.url("/x"))
    assert result.outcome == "rate-limited"
    assert 590 <= result.retry_after_s <= 600


def test_retry_after_is_capped_and_optional(http_server):
    http_server.route("/long", status=429, headers={"Retry-After": "999999"})
    http_server.route("/none", status=503)
    with Fetcher(settings(max_retry_after_s=3600)) as f:
        assert f.get(http_server.url("/long")).retry_after_s == 3600
        assert f.get(http_server.url("/none")).retry_after_s is None


def test_parse_retry_after():
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("30", cap_s=100) == 30
    assert parse_retry_after(" 7.5 ", cap_s=100) == 7.5
    assert parse_retry_after("-5", cap_s=100) == 0
    assert parse_retry_after("Wed, 01 Jan 2025 00:01:00 GMT", cap_s=100, now=now) == 60
    assert parse_retry_after("Tue, 31 Dec 2024 00:00:00 GMT", cap_s=100, now=now) == 0
    assert parse_retry_after("soon", cap_s=100) is None
    assert parse_retry_after(None, cap_s=100) is None
    assert parse_retry_after("nan", cap_s=100) is None


def test_host_key():
    assert host_key("https://News.Example.com:8443/a") == "news.example.com"
    assert host_key("not a url at all") == ""


# ---- address guard through the fetcher -----------------------------------------------------


def test_loopback_is_blocked_when_private_networks_are_not_allowed(http_server):
    http_server.route("/feed", body="secret")
    with Fetcher(settings(allow_private_networks=False)) as f:
        result = f.get(http_server.url("/feed"))
    assert result.outcome == "blocked-address" and "loopback" in result.error
    assert http_server.requests() == []


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/",
                                    "http://[fd00:ec2::254]/latest/"])
def test_redirect_to_cloud_metadata_is_refused_even_with_private_allowed(http_server, target):
    http_server.route("/feed", Response.redirect(target))
    spy = SpyBackend()
    with Fetcher(settings(allow_private_networks=True), inner_backend=spy) as f:
        result = f.get(http_server.url("/feed"))
    assert result.outcome == "blocked-address"
    assert result.redirects == [target] and result.url == target
    assert spy.addresses == ["127.0.0.1"]  # only the local server was ever connected to


@pytest.mark.parametrize("target", ["http://10.0.0.1/", "https://192.168.1.1/admin",
                                    "http://[::ffff:10.0.0.1]/", "http://0.0.0.0:80/"])
def test_redirect_to_private_address_is_refused_before_connecting(http_server, target):
    http_server.route("/feed", Response.redirect(target, status=301))
    spy = SpyBackend()
    with Fetcher(settings(allow_private_networks=False), policy=LOOPBACK_ONLY,
                 inner_backend=spy) as f:
        result = f.get(http_server.url("/feed"))
    assert result.outcome == "blocked-address"
    assert spy.addresses == ["127.0.0.1"]


def test_redirect_to_a_name_resolving_privately_is_refused(http_server):
    http_server.route("/feed", Response.redirect("http://intranet.example.test/"))
    resolver = {"intranet.example.test": ["10.1.1.1"]}
    spy = SpyBackend()
    with Fetcher(settings(), policy=LOOPBACK_ONLY, inner_backend=spy,
                 resolver=lambda host, port: resolver[host]) as f:
        result = f.get(http_server.url("/feed"))
    assert result.outcome == "blocked-address" and "10.1.1.1" in result.error
    assert spy.addresses == ["127.0.0.1"]


# ---- redirects -----------------------------------------------------------------------------


def test_relative_and_absolute_redirects_are_followed(http_server, fetcher):
    http_server.route("/a", Response.redirect("/b", status=301))
    http_server.route("/b", Response.redirect(http_server.url("/c"), status=308))
    http_server.route("/c", Response.redirect("d?x=1", status=307))
    http_server.route("/d", body="here")
    result = fetcher.get(http_server.url("/a"))
    assert (result.outcome, result.content) == ("ok", b"here")
    assert result.redirects == [http_server.url("/b"), http_server.url("/c"),
                                http_server.url("/d?x=1")]
    assert result.url == http_server.url("/d?x=1")


def test_validators_survive_a_redirect(http_server, fetcher):
    http_server.route("/old", Response.redirect("/new", status=301))
    http_server.route("/new", status=304)
    result = fetcher.get(http_server.url("/old"), etag='"e"')
    assert result.outcome == "not-modified"
    assert http_server.requests("/new")[0].headers["if-none-match"] == '"e"'


def test_too_many_redirects(http_server, fetcher):
    http_server.route("/loop", Response.redirect("/loop"))
    result = fetcher.get(http_server.url("/loop"))
    assert result.outcome == "too-many-redirects"
    assert len(http_server.requests("/loop")) == 4  # the first request + max_redirects=3
    assert len(result.redirects) == 3 and "next: /loop" in result.error


def test_redirect_to_another_scheme_is_invalid(http_server, fetcher):
    http_server.route("/x", Response.redirect("file:///etc/passwd"))
    result = fetcher.get(http_server.url("/x"))
    assert result.outcome == "invalid-url" and "scheme" in result.error


@pytest.mark.parametrize("location", ["http://[::1", "http://[::1/feed.xml", "https://[v1.x]/"])
def test_unparsable_redirect_location_is_invalid_url(http_server, fetcher, location):
    http_server.route("/x", Response.redirect(location))
    result = fetcher.get(http_server.url("/x"))
    assert result.outcome == "invalid-url", result.error  # was connection-error (transient)
    assert "Location" in result.error


def test_redirect_without_location_is_an_http_error(http_server, fetcher):
    http_server.route("/x", status=302)
    assert fetcher.get(http_server.url("/x")).outcome == "http-error"


def test_zero_redirects_allowed(http_server):
    http_server.route("/x", Response.redirect("/y"))
    http_server.route("/y", body="y")
    with Fetcher(settings(max_redirects=0)) as f:
        assert f.get(http_server.url("/x")).outcome == "too-many-redirects"
    assert http_server.requests("/y") == []


# ---- size limits and content codings -------------------------------------------------------


def test_endless_body_is_cut_off_quickly(http_server, fetcher):
    http_server.route("/huge", body=itertools.repeat(b"x" * 65536))
    started = time.monotonic()
    result = fetcher.get(http_server.url("/huge"))
    assert result.outcome == "too-large" and result.content == b""
    assert time.monotonic() - started < 1.0


def test_declared_oversize_body_is_refused_without_reading(http_server, fetcher):
    http_server.route("/big", body=b"x" * 300_000)
    result = fetcher.get(http_server.url("/big"))
    assert result.outcome == "too-large" and "Content-Length" in result.error


def test_body_at_the_limit_is_fine(http_server, fetcher):
    http_server.route("/exact", body=b"x" * 200_000)
    assert len(fetcher.get(http_server.url("/exact")).content) == 200_000


def test_gzip_bomb_is_stopped_after_decompression_limit(http_server, fetcher):
    bomb = gzip.compress(b"\0" * 20_000_000, compresslevel=9)  # ~20 KB on the wire
    assert len(bomb) < 200_000
    http_server.route("/bomb", body=bomb, headers={"Content-Encoding": "gzip"})
    started = time.monotonic()
    result = fetcher.get(http_server.url("/bomb"))
    assert result.outcome == "too-large"
    assert time.monotonic() - started < 1.0


def test_brotli_bomb_is_stopped_too(http_server, fetcher):
    bomb = brotli.compress(b"\0" * 5_000_000, quality=5)
    http_server.route("/bomb", body=bomb, headers={"Content-Encoding": "br"})
    assert fetcher.get(http_server.url("/bomb")).outcome == "too-large"


@pytest.mark.parametrize(("encoding", "encode"), [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
    ("br", brotli.compress),
    ("gzip, gzip", lambda data: gzip.compress(gzip.compress(data))),
    ("identity", lambda data: data),
])
def test_content_codings_are_decoded(http_server, fetcher, encoding, encode):
    payload = b"<rss>" + b"news " * 20_000 + b"</rss>"
    http_server.route("/c", body=encode(payload), headers={"Content-Encoding": encoding})
    result = fetcher.get(http_server.url("/c"))
    assert (result.outcome, result.content) == ("ok", payload)


def test_multi_member_gzip_is_read_whole(http_server, fetcher):
    http_server.route("/c", body=gzip.compress(b"one ") + gzip.compress(b"two"),
                      headers={"Content-Encoding": "gzip"})
    assert fetcher.get(http_server.url("/c")).content == b"one two"


def test_corrupt_gzip_is_a_connection_error(http_server, fetcher):
    http_server.route("/c", body=b"\x1f\x8b\x08\x00garbage-garbage",
                      headers={"Content-Encoding": "gzip"})
    result = fetcher.get(http_server.url("/c"))
    assert result.outcome == "connection-error" and "compressed" in result.error


# ---- time limits ---------------------------------------------------------------------------


def test_read_timeout(http_server, fetcher):
    http_server.route("/slow", delay_s=3, body="late")
    started = time.monotonic()
    result = fetcher.get(http_server.url("/slow"))
    assert result.outcome == "timeout"
    assert 0.4 < time.monotonic() - started < 1.2


def test_slow_drip_is_cut_off_at_the_total_deadline(http_server):
    # Each byte arrives well within the read timeout; the whole body never would.
    http_server.route("/drip", body=b"x" * 1000, chunk_size=1, chunk_delay_s=0.05)
    with Fetcher(settings(timeout_s=0.5, deadline_s=0.8)) as f:
        started = time.monotonic()
        result = f.get(http_server.url("/drip"))
    took = time.monotonic() - started
    assert result.outcome == "timeout" and "deadline" in result.error
    assert 0.7 < took < 1.2


def test_deadline_covers_all_redirect_hops(http_server):
    http_server.route("/a", Response(status=302, headers={"Location": "/b"}, delay_s=0.3))
    http_server.route("/b", Response(status=302, headers={"Location": "/c"}, delay_s=0.3))
    http_server.route("/c", Response(body="done", delay_s=0.3))
    with Fetcher(settings(timeout_s=0.5, deadline_s=0.7)) as f:
        result = f.get(http_server.url("/a"))
    assert result.outcome == "timeout"


# ---- connection problems and bad input -----------------------------------------------------


def test_refused_connection_is_a_connection_error(fetcher):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the request: nobody listens
    result = fetcher.get(f"http://127.0.0.1:{port}/")
    assert result.outcome == "connection-error" and result.status is None


def test_unresolvable_name_is_a_connection_error():
    def resolver(host: str, port: int) -> list[str]:
        raise httpcore.ConnectError(f"cannot resolve {host!r}")

    with Fetcher(settings(), resolver=resolver) as f:
        result = f.get("http://no-such-host.example.test/")
    assert result.outcome == "connection-error" and "resolve" in result.error


@pytest.mark.parametrize("url", ["ftp://example.com/feed", "no scheme", "http://", "",
                                 "file:///etc/passwd"])
def test_invalid_urls(fetcher, url):
    assert fetcher.get(url).outcome == "invalid-url"


def test_outcome_names_are_the_documented_set():
    assert set(OUTCOMES) == {"ok", "not-modified", "http-error", "rate-limited", "timeout",
                             "too-large", "blocked-address", "too-many-redirects",
                             "connection-error", "invalid-url"}


# ---- politeness and shared use -------------------------------------------------------------


def test_per_host_concurrency_is_enforced(http_server):
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def handler(request: RecordedRequest) -> Response:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.1)
        with lock:
            in_flight -= 1
        return Response(body="ok")

    http_server.route("/p", handler)
    with Fetcher(settings(per_host_concurrency=2)) as f:
        threads = [threading.Thread(target=f.get, args=(http_server.url("/p"),))
                   for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(http_server.requests("/p")) == 6
    assert peak == 2


def test_cookies_are_neither_kept_nor_sent(http_server, fetcher):
    http_server.route("/set", body="x", headers={"Set-Cookie": "session=abc; Path=/"})
    http_server.route("/next", body="y")
    fetcher.get(http_server.url("/set"))
    fetcher.get(http_server.url("/next"))
    assert "cookie" not in http_server.requests("/next")[0].headers


def test_environment_proxies_are_ignored(http_server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    http_server.route("/x", body="direct")
    with Fetcher(settings()) as f:
        assert f.get(http_server.url("/x")).content == b"direct"
