"""A scriptable local HTTP server for tests: real sockets on 127.0.0.1, an ephemeral port.

Use the ``http_server`` fixture (tests/conftest.py) or the context manager::

    from tests.support.httpserver import LocalHTTPServer, Response

    def test_feed(http_server):
        http_server.route("/feed.xml", body=RSS, headers={"ETag": '"v1"'})
        http_server.route("/moved", Response.redirect("/feed.xml"))
        http_server.route("/flaky", [Response(status=503), Response(body="ok")])  # in order,
        #                                                      the last one then repeats
        http_server.route("/hook", lambda req: Response(status=200 if req.json() else 400))
        url = http_server.url("/feed.xml")
        ...
        assert http_server.requests("/feed.xml")[-1].headers["if-none-match"] == '"v1"'

    with LocalHTTPServer() as server:  # outside pytest
        server.route("/", body="hello")

A route is a :class:`Response`, a list of them (served in turn, the last repeating), or a
callable ``(RecordedRequest) -> Response``; ``route(path, status=..., body=...)`` builds the
Response for you. Routes match the path without its query string; anything else is a 404.
Every method (GET, POST, PUT, ...) is served and recorded, with headers (lower-case names) and
body, in :meth:`LocalHTTPServer.requests`.

A Response can misbehave on purpose: ``delay_s`` waits before the status line (read
timeouts), ``chunk_size`` + ``chunk_delay_s`` drip the body (deadlines), and ``body`` may be
an iterable of bytes (e.g. ``itertools.repeat(b"x" * 65536)`` for an endless body), sent
chunked. Delays end early when the server stops, so teardown is never slow.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Body = bytes | str | Iterable[bytes]


@dataclass
class Response:
    """What a route answers. ``headers`` may repeat a name when given as a list of pairs."""

    status: int = 200
    body: Body = b""
    headers: dict[str, str] | list[tuple[str, str]] = field(default_factory=dict)
    delay_s: float = 0.0  # before sending anything
    chunk_size: int | None = None  # send bytes bodies in pieces of this size...
    chunk_delay_s: float = 0.0  # ...sleeping this long before each piece

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Response:
        return cls(status=status, headers={"Location": location})

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        return cls(status=status, body=json.dumps(data),
                   headers={"Content-Type": "application/json"})


@dataclass
class RecordedRequest:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic() when received

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


Route = Response | list[Response] | Callable[[RecordedRequest], Response]


class LocalHTTPServer:
    """A threaded HTTP/1.1 server; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._routes: dict[str, Route] = {}
        self._served: dict[str, int] = {}
        self._log: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server((host, port), _handler_class(self))
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def start(self) -> LocalHTTPServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name=f"httpserver-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> LocalHTTPServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- scripting ------------------------------------------------------------------------

    def route(self, path: str, response: Route | None = None, **response_fields: Any) -> None:
        """Serve ``path`` with ``response`` (or ``Response(**response_fields)``)."""
        if response is None:
            response = Response(**response_fields)
        elif response_fields:
            raise TypeError("give a response or its fields, not both")
        with self._lock:
            self._routes[path] = response
            self._served[path] = 0

    def requests(self, path: str | None = None) -> list[RecordedRequest]:
        """Requests received so far (for ``path`` only, query ignored, when given)."""
        with self._lock:
            log = list(self._log)
        if path is None:
            return log
        return [r for r in log if urlsplit(r.path).path == path]

    def clear(self) -> None:
        with self._lock:
            self._log.clear()

    # ---- serving (called from handler threads) --------------------------------------------

    def _respond_to(self, request: RecordedRequest) -> Response:
        path = urlsplit(request.path).path
        with self._lock:
            self._log.append(request)
            route = self._routes.get(path)
            count = self._served.get(path, 0)
            self._served[path] = count + 1
        if route is None:
            return Response(status=404, body=b"not found")
        if isinstance(route, Response):
            return route
        if isinstance(route, list):
            return route[min(count, len(route) - 1)]
        return route(request)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops first; True if still running."""
        return seconds <= 0 or not self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive clients must not make stop() wait
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients hanging up is normal
            super().handle_error(request, client_address)


def _handler_class(server: LocalHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = RecordedRequest(
                method=self.command, path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()}, body=body,
                at=time.monotonic())
            response = server._respond_to(request)
            try:
                self._send(response)
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                self.close_connection = True  # the client gave up, as tests intend

        def _send(self, response: Response) -> None:
            if not server._sleep(response.delay_s):
                self.close_connection = True
                return
            pairs = (list(response.headers.items()) if isinstance(response.headers, dict)
                     else list(response.headers))
            names = {name.lower() for name, _ in pairs}
            body = response.body.encode("utf-8") if isinstance(response.body, str) \
                else response.body
            self.send_response(response.status)
            for name, value in pairs:
                self.send_header(name, value)
            if isinstance(body, bytes):
                if "content-length" not in names:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD" and response.status not in (204, 304):
                    self._write_pieces(_pieces(body, response.chunk_size),
                                       response.chunk_delay_s)
            else:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self._write_chunked(iter(body), response.chunk_delay_s)

        def _write_pieces(self, pieces: Iterator[bytes], delay_s: float) -> None:
            for piece in pieces:
                if not server._sleep(delay_s):
                    self.close_connection = True
                    return
                self.wfile.write(piece)
                self.wfile.flush()

        def _write_chunked(self, pieces: Iterator[bytes], delay_s: float) -> None:
            for piece in pieces:
                if not server._sleep(delay_s):
                    self.close_connection = True
                    return
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _pieces(body: bytes, size: int | None) -> Iterator[bytes]:
    if not size:
        yield body
        return
    for start in range(0, len(body), size):
        yield body[start:start + size]
