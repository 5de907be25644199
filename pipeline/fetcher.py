"""HTTP GET for feeds and article pages: safe, polite, bounded, and never raising.

Every request:

* goes through the address guard (:mod:`pipeline.netguard`) on every connection, redirects
  included, which are followed here by hand so each hop's scheme is checked too;
* holds a per-host slot (``per_host_concurrency``) so feed and page fetches share politeness;
* has connect/read timeouts (``timeout_s``) and one total deadline (``deadline_s``) enforced
  inside every socket read, so a server dripping a byte at a time is cut off on time;
* reads at most ``max_bytes`` of *decompressed* body. Decompression is done here with bounded
  output per step (httpx's decoders inflate a whole network chunk at once, which for a gzip
  bomb is ~1000x the chunk), so a bomb costs at most one step of memory;
* ends in a :class:`FetchResult` with one of :data:`OUTCOMES`; network problems never raise.
"""

from __future__ import annotations

import email.utils
import functools
import http.cookiejar
import logging
import threading
import time
import typing
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpcore
import httpx

from pipeline.netguard import (
    AddressPolicy,
    BlockedAddressError,
    InvalidURLError,
    Resolver,
    guarded_transport,
    vet_url,
)
from pipeline.settings import FetchSettings

logger = logging.getLogger(__name__)

OUTCOMES = (
    "ok",  # 2xx, body read
    "not-modified",  # 304 to a conditional request
    "http-error",  # any other 4xx/5xx (and 3xx that is not a usable redirect)
    "rate-limited",  # 429 or 503; retry_after_s set when the server said when
    "timeout",  # connect/read timeout or the total deadline
    "too-large",  # body beyond max_bytes after decompression
    "blocked-address",  # the address guard refused a hop
    "too-many-redirects",
    "connection-error",  # DNS, refused, reset, protocol or decoding errors
    "invalid-url",  # not http(s), no host, unparsable (also a bad Location)
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RATE_LIMIT_STATUSES = frozenset({429, 503})
_DECODE_STEP = 64 * 1024  # most bytes one decompression step may produce
_BAD_LOCATION = "Invalid URL in location header"  # httpx's message for an unparsable Location


@dataclass(slots=True)
class FetchResult:
    """What one GET (redirects included) came to."""

    url: str  # the final URL (after redirects)
    status: int | None
    outcome: str
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    error: str | None = None
    retry_after_s: float | None = None
    elapsed_s: float = 0.0
    redirects: list[str] = field(default_factory=list)  # each Location followed, in order

    @property
    def ok(self) -> bool:
        """A 2xx with its body read (a 304 is not ``ok``: there is no body)."""
        return self.outcome == "ok"


# ---- helpers -------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, cap_s: float,
                      now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap_s)


def host_key(url: str | httpx.URL) -> str:
    """The politeness key of a URL: its lower-case hostname."""
    try:
        return (url.host if isinstance(url, httpx.URL) else httpx.URL(url).host).lower()
    except (httpx.InvalidURL, ValueError, UnicodeError):
        return ""


@functools.cache
def _brotli_module() -> typing.Any:
    """The brotli module if it can decompress with bounded output, else None."""
    try:
        import brotli
    except ImportError:
        return None
    try:
        brotli.Decompressor().process(b"", output_buffer_limit=1)
    except TypeError:  # too old for output_buffer_limit: unbounded, so not advertised
        return None
    except Exception:  # empty input may fail on some builds; the keyword exists, so fine
        pass
    return brotli


def accept_encoding() -> str:
    return "gzip, deflate, br" if _brotli_module() is not None else "gzip, deflate"


class _BodyDecoder:
    """Incremental, output-bounded Content-Encoding decoder (identity when unknown)."""

    def decode(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data

    def flush(self) -> Iterator[bytes]:
        return iter(())


class _ZlibDecoder(_BodyDecoder):
    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._started = False
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)

    def decode(self, data: bytes) -> Iterator[bytes]:
        if not self._started and not self._gzip:
            self._started = True
            try:  # "deflate" should be zlib-wrapped, but raw deflate is common in the wild
                probe = zlib.decompressobj(zlib.MAX_WBITS)
                probe.decompress(data[:64], 1)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        pending = data
        while True:
            out = self._obj.decompress(pending, _DECODE_STEP)
            if out:
                yield out
            pending = self._obj.unconsumed_tail
            if self._obj.eof:
                rest = self._obj.unused_data
                if self._gzip and rest.startswith(b"\x1f\x8b"):  # another gzip member
                    self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    pending = rest
                    continue
                return
            if not pending and len(out) < _DECODE_STEP:
                return

    def flush(self) -> Iterator[bytes]:
        tail = self._obj.flush()
        if tail:
            yield tail


class _BrotliDecoder(_BodyDecoder):
    def __init__(self, brotli: typing.Any) -> None:
        self._obj = brotli.Decompressor()

    def decode(self, data: bytes) -> Iterator[bytes]:
        out = self._obj.process(data, output_buffer_limit=_DECODE_STEP)
        if out:
            yield out
        while not self._obj.can_accept_more_data():  # output pending: drain before more input
            out = self._obj.process(b"", output_buffer_limit=_DECODE_STEP)
            if not out:
                return
            yield out

    def flush(self) -> Iterator[bytes]:
        while not self._obj.is_finished():
            out = self._obj.process(b"", output_buffer_limit=_DECODE_STEP)
            if not out:
                return
            yield out


def _decoders_for(content_encoding: str | None) -> list[_BodyDecoder]:
    """Decoders in the order to apply them (the reverse of the header's order)."""
    decoders: list[_BodyDecoder] = []
    for token in reversed((content_encoding or "").lower().split(",")):
        token = token.strip()
        if token in ("gzip", "x-gzip"):
            decoders.append(_ZlibDecoder(gzip=True))
        elif token == "deflate":
            decoders.append(_ZlibDecoder(gzip=False))
        elif token == "br" and _brotli_module() is not None:
            decoders.append(_BrotliDecoder(_brotli_module()))
        # identity, empty and unknown codings pass through (as httpx does)
    return decoders


def _decode_chain(decoders: list[_BodyDecoder], chunks: Iterator[bytes]) -> Iterator[bytes]:
    stream: Iterator[bytes] = chunks
    for decoder in decoders:
        stream = _through(decoder, stream)
    return stream


def _through(decoder: _BodyDecoder, chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        for chunk in chunks:
            yield from decoder.decode(chunk)
        yield from decoder.flush()
    except (zlib.error, _brotli_error()) as exc:
        raise httpx.DecodingError(f"corrupt compressed body: {exc}") from exc


def _brotli_error() -> type[Exception]:
    brotli = _brotli_module()
    return brotli.error if brotli is not None else zlib.error


# ---- deadline enforcement inside socket I/O -------------------------------------------------


class _Deadline(threading.local):
    """The current thread's request deadline (monotonic seconds), read by every socket op."""

    at: float | None = None

    def clamp(self, timeout: float | None, error: type[Exception]) -> float | None:
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise error("request deadline exceeded")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: typing.Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname,
                                     self._deadline.clamp(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, timeout=self._deadline.clamp(timeout, httpcore.ConnectTimeout),
            local_address=local_address, socket_options=socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                            ) -> httpcore.NetworkStream:
        raise BlockedAddressError(path, path, "unix socket")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# ---- the fetcher ---------------------------------------------------------------------------


class Fetcher:
    """Thread-safe GET with the safety rules above. Share one per process/run.

    ``policy`` defaults to the settings' ``allow_private_networks``; ``resolver`` and
    ``inner_backend`` exist for tests (fake DNS, counting connection attempts).
    """

    def __init__(self, settings: FetchSettings, *, policy: AddressPolicy | None = None,
                 resolver: Resolver | None = None,
                 inner_backend: httpcore.NetworkBackend | None = None) -> None:
        self.settings = settings
        self.policy = policy or AddressPolicy.create(
            allow_private=settings.allow_private_networks)
        self._deadline = _Deadline()
        transport = guarded_transport(
            self.policy,
            inner_backend=_DeadlineBackend(inner_backend or httpcore.SyncBackend(),
                                           self._deadline),
            resolver=resolver,
            retries=0,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )
        self._client = httpx.Client(transport=transport, trust_env=False, follow_redirects=False,
                                    timeout=httpx.Timeout(settings.timeout_s))
        self._client.cookies.jar.set_policy(_NoCookies())
        self._host_slots: dict[str, threading.BoundedSemaphore] = {}
        self._host_slots_lock = threading.Lock()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def _host_slot(self, host: str) -> Iterator[None]:
        with self._host_slots_lock:
            slot = self._host_slots.get(host)
            if slot is None:
                slot = threading.BoundedSemaphore(self.settings.per_host_concurrency)
                self._host_slots[host] = slot
        with slot:
            yield

    def get(self, url: str, *, etag: str | None = None, last_modified: str | None = None,
            accept: str | None = None) -> FetchResult:
        """GET ``url``; conditional when ``etag``/``last_modified`` are given. Never raises
        for network problems (see OUTCOMES)."""
        started = time.monotonic()
        headers = {"User-Agent": self.settings.user_agent, "Accept-Encoding": accept_encoding(),
                   "Accept": accept or "*/*"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        redirects: list[str] = []
        current = url
        deadline: list[float] = []  # set once the first host slot is held
        try:
            while True:
                try:
                    target = vet_url(current, self.policy)
                except InvalidURLError as exc:
                    return self._result(current, None, "invalid-url", started, redirects,
                                        error=str(exc))
                with self._host_slot(host_key(target)):
                    if not deadline:
                        deadline.append(time.monotonic() + self.settings.deadline_s)
                    hop = self._hop(target, headers, deadline[0], started, redirects)
                if isinstance(hop, FetchResult):
                    return hop
                location = hop
                if len(redirects) >= self.settings.max_redirects:
                    return self._result(
                        current, None, "too-many-redirects", started, redirects,
                        error=f"more than {self.settings.max_redirects} redirects "
                              f"(next: {location[:200]})")
                try:
                    current = str(target.join(location))
                except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
                    return self._result(str(target), None, "invalid-url", started, redirects,
                                        error=f"bad redirect Location {location[:200]!r}: {exc}")
                redirects.append(current)
        except BlockedAddressError as exc:
            return self._result(current, None, "blocked-address", started, redirects,
                                error=str(exc))
        except httpx.TimeoutException as exc:
            late = bool(deadline) and time.monotonic() >= deadline[0]
            error = (f"deadline of {self.settings.deadline_s:g}s exceeded" if late
                     else f"{type(exc).__name__}: {exc}")
            return self._result(current, None, "timeout", started, redirects, error=error)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return self._result(current, None, "invalid-url", started, redirects,
                                error=f"{type(exc).__name__}: {exc}")
        except httpx.RemoteProtocolError as exc:
            # httpx parses a redirect's Location while receiving the response; one it cannot
            # parse (http://[::1) is the server's bad URL, not a transient network problem.
            if str(exc).startswith(_BAD_LOCATION):
                return self._result(current, None, "invalid-url", started, redirects,
                                    error=f"bad redirect Location: {exc}")
            return self._result(current, None, "connection-error", started, redirects,
                                error=f"{type(exc).__name__}: {exc}")
        except (httpx.TransportError, httpx.DecodingError, httpx.StreamError, OSError) as exc:
            return self._result(current, None, "connection-error", started, redirects,
                                error=f"{type(exc).__name__}: {exc}")

    def _hop(self, target: httpx.URL, headers: dict[str, str], deadline_at: float,
             started: float, redirects: list[str]) -> FetchResult | str:
        """Send one request: the final result, or the Location of a redirect to follow."""
        left = deadline_at - time.monotonic()
        if left <= 0:
            raise httpx.ReadTimeout("request deadline exceeded")
        request = self._client.build_request(
            "GET", target, headers=headers, timeout=httpx.Timeout(min(self.settings.timeout_s,
                                                                      left)))
        self._deadline.at = deadline_at
        try:
            response = self._client.send(request, stream=True)
            try:
                return self._handle(response, str(target), started, redirects)
            finally:
                response.close()
        finally:
            self._deadline.at = None

    def _handle(self, response: httpx.Response, url: str, started: float,
                redirects: list[str]) -> FetchResult | str:
        status = response.status_code
        headers = _lower_headers(response.headers)

        def final(outcome: str, **kwargs: typing.Any) -> FetchResult:
            return self._result(url, status, outcome, started, redirects, headers=headers,
                                **kwargs)

        if status in REDIRECT_STATUSES and headers.get("location"):
            return headers["location"]
        if status == 304:
            return final("not-modified")
        if status in RATE_LIMIT_STATUSES:
            retry_after = parse_retry_after(headers.get("retry-after"),
                                            cap_s=self.settings.max_retry_after_s)
            return final("rate-limited", retry_after_s=retry_after,
                         error=f"HTTP {status} {response.reason_phrase}".strip())
        if not 200 <= status < 300:
            return final("http-error", error=f"HTTP {status} {response.reason_phrase}".strip())
        limit = self.settings.max_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return final("too-large", error=f"Content-Length {declared} > max_bytes {limit}")
        parts: list[bytes] = []
        size = 0
        decoders = _decoders_for(headers.get("content-encoding"))
        for chunk in _decode_chain(decoders, response.iter_raw()):
            size += len(chunk)
            if size > limit:
                return final("too-large", error=f"body exceeds max_bytes {limit}")
            parts.append(chunk)
        return final("ok", content=b"".join(parts))

    def _result(self, url: str, status: int | None, outcome: str, started: float,
                redirects: list[str], **kwargs: typing.Any) -> FetchResult:
        result = FetchResult(url=url, status=status, outcome=outcome,
                             elapsed_s=time.monotonic() - started, redirects=list(redirects),
                             **kwargs)
        logger.debug("GET %s -> %s %s (%.2fs)%s", url, outcome, status or "", result.elapsed_s,
                     f": {result.error}" if result.error else "")
        return result


def _lower_headers(headers: httpx.Headers) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in headers.multi_items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Accept and return no cookies: one fetcher serves every site, so no state is shared."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: typing.Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: typing.Any) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: typing.Any) -> bool:
        return False

    def path_return_ok(self, path: str, request: typing.Any) -> bool:
        return False
