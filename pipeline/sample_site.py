"""Serve the bundled fictional sample site on 127.0.0.1 (for ``newswatch demo`` and tests).

Files are served from ``examples/sample_site/`` with ``{{BASE_URL}}`` replaced by the server's
own address. Pages whose manifest entry says ``serve_status: 403`` answer 403 (a paywall), and
:meth:`SampleSite.publish_edit` swaps an article for its edited version and marks its feed
item as updated, as a publisher would.

The two ``kind: "seed"`` pages carry the user's own example articles (Qin Gang, China–US
relations, Taiwan). Their text belongs to its publishers and is not in the repository: the
pages hold ``{{SEED file=NAME fictional=PATH [paragraphs=A-B] [class=CSS]}}`` markers, filled
at serving time from ``seeds_dir`` (``demo.seeds_dir``, ``../shared/data/seeds`` beside a
checkout) when it holds ``NAME``, and otherwise from the site's own fictional pair
(``fictional-seeds/``, written for newswatch in the same spirit: two outlets, one China–US
meeting, Taiwan a substantive point). :attr:`SampleSite.missing_seeds` names the user's files
that were not found, so a caller can say which pair is being served.
"""

from __future__ import annotations

import html
import json
import mimetypes
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PLACEHOLDER = "{{BASE_URL}}"
_SEED_MARKER = re.compile(r"\{\{SEED ([^}]*)\}\}")


class SampleSite:
    """A tiny static server with the sample site's behaviours; use as a context manager."""

    def __init__(self, site_dir: str | Path, host: str = "127.0.0.1", port: int = 0, *,
                 seeds_dir: str | Path | None = None) -> None:
        self.site_dir = Path(site_dir).resolve()
        self.seeds_dir = Path(seeds_dir).resolve() if seeds_dir else None
        if not (self.site_dir / "manifest.json").is_file():
            raise FileNotFoundError(f"not a sample site (no manifest.json): {self.site_dir}")
        self.manifest: list[dict[str, Any]] = json.loads(
            (self.site_dir / "manifest.json").read_text(encoding="utf-8"))
        self.forbidden = {m["path"] for m in self.manifest if m.get("serve_status") == 403}
        self.edits: dict[str, str] = {}  # path -> path of the edited version being served
        self.requests: list[tuple[str, str]] = []  # (method, path) log
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def missing_seeds(self) -> list[str]:
        """Seed files the manifest's pages need that ``seeds_dir`` does not hold."""
        wanted = [m["seed_file"] for m in self.manifest if m.get("seed_file")]
        return [name for name in wanted
                if self.seeds_dir is None or not (self.seeds_dir / name).is_file()]

    def seed_source(self, options: dict[str, str]) -> Path:
        """The text file a seed marker is filled from (the user's, else the fictional one)."""
        name = Path(options.get("file", "")).name
        if self.seeds_dir is not None and name and (self.seeds_dir / name).is_file():
            return self.seeds_dir / name
        fictional = (self.site_dir / options.get("fictional", "")).resolve()
        if self.site_dir not in fictional.parents or not fictional.is_file():
            raise FileNotFoundError(f"seed marker without a fictional stand-in: {options}")
        return fictional

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def feed_urls(self) -> list[str]:
        return [f"{self.base_url}/feeds/{p.name}"
                for p in sorted((self.site_dir / "feeds").glob("*.xml"))]

    def publish_edit(self, path: str) -> None:
        """Serve the edited version of ``path`` (from the manifest) from now on."""
        entry = next((m for m in self.manifest if m["path"] == path), None)
        if entry is None or not entry.get("edited_version"):
            raise KeyError(f"no edited version for {path}")
        with self._lock:
            self.edits[path] = entry["edited_version"]

    def start(self) -> SampleSite:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="sample-site")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SampleSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- serving --------------------------------------------------------------------------

    def render(self, rel_path: str) -> tuple[int, bytes, str]:
        with self._lock:
            self.requests.append(("GET", rel_path))
            edits = dict(self.edits)
        if rel_path in ("", "/"):
            rel_path = "index.html"
        if rel_path in self.forbidden:
            return 403, b"<html><body><h1>Subscribers only</h1></body></html>", "text/html"
        target = (self.site_dir / edits.get(rel_path, rel_path)).resolve()
        if not target.is_file() or self.site_dir not in target.parents:
            return 404, b"not found", "text/plain"
        body = target.read_text(encoding="utf-8")
        if rel_path.startswith("feeds/"):
            for original in edits:
                body = _mark_item_updated(body, original)
        body = body.replace(PLACEHOLDER, self.base_url)
        if target.suffix == ".html":
            body = _SEED_MARKER.sub(lambda m: self._seed_html(m.group(1)), body)
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".xml":
            ctype = "application/xml"
        return 200, body.encode("utf-8"), f"{ctype}; charset=utf-8"

    def _seed_html(self, spec: str) -> str:
        """The paragraphs a ``{{SEED ...}}`` marker asks for, as ``<p>`` elements: from the
        user's seed file when ``seeds_dir`` holds it, else from the fictional stand-in."""
        options = dict(part.split("=", 1) for part in spec.split() if "=" in part)
        first, _, last = options.get("paragraphs", "0-").partition("-")
        start, stop = int(first or 0), int(last) if last else None
        source = self.seed_source(options)
        paragraphs = seed_paragraphs(source.read_text(encoding="utf-8"))[start:stop]
        attrs = f' class="{html.escape(options["class"])}"' if options.get("class") else ""
        return "\n        ".join(f"<p{attrs}>{html.escape(p, quote=False)}</p>"
                                   for p in paragraphs)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, ctype = site.render(urlsplit(self.path).path.lstrip("/"))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self) -> None:
                self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
                self.end_headers()

            def log_message(self, *args: object) -> None:  # keep test and demo output clean
                return

        return Handler


def seed_paragraphs(text: str) -> list[str]:
    """A plain-text article's paragraphs (blank-line separated), whitespace collapsed."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def _mark_item_updated(feed_xml: str, article_path: str) -> str:
    """Append an update note to the summary of the feed item that links ``article_path``."""
    link = f"{PLACEHOLDER}/{article_path}"
    for tag, summary in (("item", "description"), ("entry", "summary")):
        pattern = re.compile(rf"<{tag}\b.*?</{tag}>", re.S)
        for match in pattern.finditer(feed_xml):
            block = match.group(0)
            if link not in block:
                continue
            updated = re.sub(rf"(</{summary}>)", r" (Updated.)\1", block, count=1)
            return feed_xml[: match.start()] + updated + feed_xml[match.end():]
    return feed_xml
