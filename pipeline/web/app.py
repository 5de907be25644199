"""The web app: JSON API under ``/api`` and server-rendered pages (search, story, feeds).

Every link is built from the request's ``root_path``, so the app works standalone
(``newswatch serve``) and mounted under a prefix (the Airflow plugin mounts it at
``/newswatch``). Templates autoescape everything; search snippets mark matches as
``[[term]]`` and are escaped first, then the markers become ``<mark>``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.records import FeedRow, Store, open_store
from pipeline.records import alerts as alert_records
from pipeline.records import stories as story_records
from pipeline.records.articles import list_sources
from pipeline.records.feeds import FEED_SUCCESS
from pipeline.sanitize import EARLIEST_DATE, has_control, plausible_date
from pipeline.search.base import (
    MAX_LIMIT,
    SearchMisconfigured,
    SearchResults,
    SearchUnavailable,
    parse_since,
)
from pipeline.settings import Settings

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
MODES = ("hybrid", "keyword", "semantic")
_MARK = re.compile(r"\[\[(.+?)\]\]", re.S)
MAX_TEXT_CHARS = 1000  # longest text parameter (a query, a source name, an id)
TEXT_PARAMS = ("q", "source", "watch", "mode")


class BadRequest(ValueError):
    """A bad query parameter: answered 400 with a one-line message."""


# ---- helpers: parameters, formatting ---------------------------------------------------------


def _int_param(value: str | None, name: str, default: int, low: int = 1,
               high: int = MAX_LIMIT) -> int:
    if value is None or not value.strip():
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number (got {value!r})") from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high} (got {number})")
    return number


def _bool_param(value: str | None, name: str, default: bool = False) -> bool:
    if value is None or not value.strip():
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise BadRequest(f"{name} must be true or false (got {value!r})")


def _text_param(value: str | None, name: str) -> str | None:
    """A text parameter as given, or BadRequest when it holds control characters (a NUL
    reaches no database) or is implausibly long."""
    if value is None:
        return None
    if has_control(value.replace("\t", " ").replace("\n", " ").replace("\r", " ")):
        raise BadRequest(f"{name}: contains control characters")
    if len(value) > MAX_TEXT_CHARS:
        raise BadRequest(f"{name}: longer than {MAX_TEXT_CHARS} characters")
    return value


def _text_params(request: Request) -> None:
    """Check every text parameter of a request (repeated ones included) before use."""
    for name in TEXT_PARAMS:
        for value in request.query_params.getlist(name):
            _text_param(value, name)


def _when(value: str | None, name: str) -> datetime | None:
    """A since/until value, or BadRequest naming the parameter: unparsable, or outside
    1990-01-01 .. a day from now (so no window is wider than a few decades)."""
    _text_param(value, name)
    try:
        when = parse_since(value)
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from None
    except OverflowError:  # 99999999d: further back than a date can go
        raise BadRequest(f"{name}: {value!r} is too far back (the earliest is "
                         f"{EARLIEST_DATE:%Y-%m-%d})") from None
    if when is not None and plausible_date(when) is None:
        raise BadRequest(f"{name}: {value!r} is outside {EARLIEST_DATE:%Y-%m-%d} .. tomorrow")
    return when


def _one_line(message: object) -> str:
    return " ".join(str(message).split())[:300]


def highlight(snippet: str | None) -> Markup:
    """Escape a snippet, then turn its ``[[term]]`` markers into ``<mark>term</mark>``."""
    escaped = str(escape(snippet or ""))
    return Markup(_MARK.sub(r"<mark>\1</mark>", escaped))


def safe_url(url: str | None) -> str | None:
    """Only http(s) links leave the app (no ``javascript:`` from a feed)."""
    if not url:
        return None
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return None
    return url.strip() if scheme in ("http", "https") else None


def format_dt(value: datetime | str | None) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return value.strftime("%Y-%m-%d %H:%M") + (" UTC" if value.tzinfo else "")


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


# ---- record queries -------------------------------------------------------------------------


def _story_row(row: Any) -> dict[str, Any]:
    data = dict(row)
    data.pop("centroid", None)
    return {k: _iso(v) for k, v in data.items()}


def query_stories(store: Store, since: datetime | None = None, query: str | None = None,
                  limit: int = 50) -> list[dict[str, Any]]:
    """Stories, most recently active first (``records.stories.list_stories``), for JSON."""
    return [{k: _iso(v) for k, v in s.items() if k != "centroid"}
            for s in story_records.list_stories(store, since=since, query=query, limit=limit)]


def story_titles(store: Store, story_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Story rows by id (for labelling search groups)."""
    return story_records.stories_by_id(store, story_ids, (
        "story_id", "title", "article_count", "first_seen_at", "last_seen_at"))


def get_story(store: Store, story_id: str) -> dict[str, Any] | None:
    """A story and every article in it (oldest first), or None."""
    row, articles = story_records.story_and_articles(store, story_id)
    if row is None and not articles:
        return None
    story = _story_row(row) if row is not None else {"story_id": story_id, "title": None}
    items = [{
        "article_id": r["article_id"],
        "title": r["title"] or r["entry_title"] or "",
        "source": r["source"],
        "url": r["url"] or r["link"],
        "published_at": _iso(r["published_at"]),
        "first_seen_at": _iso(r["first_seen_at"]),
        "duplicate_of": r["duplicate_of"],
    } for r in articles]
    seen = [r["first_seen_at"] for r in articles if r["first_seen_at"] is not None]
    story.setdefault("first_seen_at", _iso(min(seen)) if seen else None)
    story.setdefault("last_seen_at", _iso(max(seen)) if seen else None)
    story["title"] = story.get("title") or (items[0]["title"] if items else story_id)
    story["article_count"] = len(items)
    story["sources"] = sorted({i["source"] for i in items if i["source"]})
    story["articles"] = items
    return story


def feed_health(store: Store) -> list[dict[str, Any]]:
    """Each feed's state, last outcome, failures, article and outcome counts."""
    outcomes = store.feed_outcome_counts()
    articles = store.feed_article_counts()
    return [{
        "feed_id": f.feed_id,
        "url": f.url,
        "name": f.display_name,
        "source": f.source_name,
        "state": _feed_state(f),
        "enabled": f.enabled,
        "dead": f.dead,
        "last_outcome": f.last_outcome,
        "last_status": f.last_status,
        "last_error": f.last_error,
        "last_fetched_at": _iso(f.last_fetched_at),
        "last_success_at": _iso(f.last_success_at),
        "next_fetch_at": _iso(f.next_fetch_at),
        "consecutive_failures": f.consecutive_failures,
        "fetch_count": f.fetch_count,
        "articles": articles.get(f.feed_id, 0),
        "outcomes": outcomes.get(f.feed_id, {}),
    } for f in store.list_feeds()]


def _feed_state(feed: FeedRow) -> str:
    if feed.dead:
        return "dead"
    if not feed.enabled:
        return "disabled"
    if feed.last_outcome is None:
        return "new"
    if feed.consecutive_failures > 0 or feed.last_outcome not in FEED_SUCCESS:
        return "failing"
    return "ok"


def watch_names(store: Store, settings: Settings) -> list[str]:
    """Watches to filter by: configured ones plus any the ledger holds alerts of."""
    return sorted({w.name for w in settings.watches} | alert_records.watches_with_alerts(store))


def list_alerts(store: Store, watch: str | None, since: datetime | None,
                limit: int) -> list[dict[str, Any]]:
    """Alerts newest first, with their deliveries, for JSON."""
    rows = alert_records.list_alerts(store, watch=watch, since=since, limit=limit)
    return [_jsonable(r) for r in rows]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return _iso(value)


# ---- the app -------------------------------------------------------------------------------


class WebContext:
    """Settings plus a lazily opened store shared by the app's requests."""

    def __init__(self, settings: Settings, default_mode: str = "hybrid") -> None:
        if default_mode not in MODES:
            raise ValueError(f"unknown search mode {default_mode!r}")
        self.settings = settings
        self.default_mode = default_mode
        self._store: Store | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings.store.url)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def search(self, params: dict[str, str], sources: list[str], *, by_story: bool = True,
               limit: int = 20) -> SearchResults:
        """Run a search from request parameters; bad input raises :class:`BadRequest`."""
        from pipeline.query import run_search

        mode = (params.get("mode") or self.default_mode).strip()
        if mode not in MODES:
            raise BadRequest(f"unknown search mode {mode!r} (use one of: {', '.join(MODES)})")
        since, until = params.get("since"), params.get("until")
        _when(since, "since")
        _when(until, "until")
        try:
            return run_search(self.settings, params.get("q") or "", since=since, until=until,
                              sources=[s.strip() for s in sources if s.strip()], limit=limit,
                              by_story=by_story, mode=mode)
        except ValueError as exc:
            raise BadRequest(_one_line(exc)) from None


def _templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["highlight"] = highlight
    env.filters["safe_url"] = safe_url
    env.filters["dt"] = format_dt
    return Jinja2Templates(env=env)


def _base(request: Request) -> str:
    """The mount point's path (``""`` standalone, ``/newswatch`` under Airflow)."""
    return str(request.scope.get("root_path") or "").rstrip("/")


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": _one_line(message)}, status_code=400)


def create_app(settings: Settings, *, default_mode: str = "hybrid") -> FastAPI:
    """Build the newswatch web app over ``settings`` (the store opens on first request)."""
    ctx = WebContext(settings, default_mode)
    templates = _templates()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield  # a mounted app gets no lifespan events; it lives as long as its parent
        ctx.close()

    app = FastAPI(title="newswatch", docs_url="/api/docs", redoc_url=None,
                  openapi_url="/api/openapi.json", lifespan=lifespan)
    app.state.newswatch = ctx
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def is_api(request: Request) -> bool:
        path = str(request.scope.get("path") or "")
        root = str(request.scope.get("root_path") or "")
        local = path[len(root):] if root and path.startswith(root) else path
        return local.startswith("/api/")

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        base = _base(request)
        context.update(base=base, static=f"{base}/static", nav=name.removesuffix(".html"))
        return templates.TemplateResponse(request, name, context, status_code=status)

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest) -> Response:
        if is_api(request):
            return _bad(str(exc))
        return page(request, "error.html", 400, message=_one_line(exc), title="Bad request")

    @app.exception_handler(SearchUnavailable)
    @app.exception_handler(SearchMisconfigured)
    async def _unavailable(request: Request, exc: Exception) -> Response:
        message = _one_line(f"search is unavailable: {exc}")
        if is_api(request):
            return JSONResponse({"error": message}, status_code=503)
        return page(request, "error.html", 503, message=message, title="Search unavailable")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path"))
        return _bad(f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_api(request) or exc.status_code not in (404,):
            return JSONResponse({"error": _one_line(exc.detail)}, status_code=exc.status_code)
        return page(request, "error.html", exc.status_code, message=_one_line(exc.detail),
                    title="Not found")

    # ---- JSON API --------------------------------------------------------------------------

    @app.get("/api/search")
    def api_search(request: Request) -> JSONResponse:
        _text_params(request)
        params = dict(request.query_params)
        limit = _int_param(params.get("limit"), "limit", 20)
        by_story = _bool_param(params.get("by_story"), "by_story")
        if not (params.get("q") or "").strip():
            raise BadRequest("q: empty query")
        results = ctx.search(params, request.query_params.getlist("source"),
                             by_story=by_story, limit=limit)
        return JSONResponse(results.to_json())

    @app.get("/api/stories")
    def api_stories(request: Request) -> JSONResponse:
        _text_params(request)
        params = request.query_params
        since = _when(params.get("since"), "since")
        limit = _int_param(params.get("limit"), "limit", 50)
        stories = query_stories(ctx.store, since=since, query=params.get("q"), limit=limit)
        return JSONResponse({"stories": stories})

    @app.get("/api/stories/{story_id}")
    def api_story(story_id: str) -> JSONResponse:
        _text_param(story_id, "story_id")
        story = get_story(ctx.store, story_id)
        if story is None:
            return JSONResponse({"error": f"no story {story_id!r}"}, status_code=404)
        return JSONResponse(story)

    @app.get("/api/feeds")
    def api_feeds() -> JSONResponse:
        return JSONResponse({"feeds": feed_health(ctx.store)})

    @app.get("/api/alerts")
    def api_alerts(request: Request) -> JSONResponse:
        _text_params(request)
        params = request.query_params
        since = _when(params.get("since"), "since")
        limit = _int_param(params.get("limit"), "limit", 100)
        alerts = list_alerts(ctx.store, params.get("watch") or None, since, limit)
        return JSONResponse({"available": True, "alerts": alerts})

    # ---- pages -----------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def search_page(request: Request) -> HTMLResponse:
        _text_params(request)
        params = {k: v for k, v in request.query_params.items() if k in
                  ("q", "since", "until", "source", "watch", "mode")}
        store = ctx.store
        watches = watch_names(store, settings)
        groups: list[dict[str, Any]] = []
        total = 0
        q = (params.get("q") or "").strip()
        recent: list[dict[str, Any]] = []
        if q:
            limit = _int_param(request.query_params.get("limit"), "limit", 50)
            results = ctx.search(params, request.query_params.getlist("source"),
                                 by_story=True, limit=limit)
            total = results.total
            raw_groups = results.groups or []
            watch = params.get("watch") or ""
            if watch and watches:
                keep = alert_records.alerted_stories(store, watch)
                raw_groups = [g for g in raw_groups if g.story_id in keep]
            stories = story_titles(store, [g.story_id for g in raw_groups if g.story_id])
            for g in raw_groups:
                story = stories.get(g.story_id or "")
                groups.append({
                    "story_id": g.story_id,
                    "title": (story or {}).get("title") or g.hits[0].title,
                    "article_count": (story or {}).get("article_count") or len(g.hits),
                    "last_seen_at": (story or {}).get("last_seen_at"),
                    "hits": g.hits,
                })
        else:
            recent = query_stories(store, since=_when(params.get("since"), "since"), limit=20)
        return page(request, "search.html", params=params, q=q, groups=groups, total=total,
                    sources=list_sources(store), watches=watches, modes=MODES,
                    mode=params.get("mode") or ctx.default_mode, recent=recent,
                    title=f"{q} – news search" if q else "News search")

    @app.get("/stories/{story_id}", response_class=HTMLResponse)
    def story_page(request: Request, story_id: str) -> HTMLResponse:
        _text_param(story_id, "story_id")
        story = get_story(ctx.store, story_id)
        if story is None:
            raise StarletteHTTPException(404, f"no story {story_id}")
        return page(request, "story.html", story=story, title=story["title"])

    @app.get("/feeds", response_class=HTMLResponse)
    def feeds_page(request: Request) -> HTMLResponse:
        return page(request, "feeds.html", feeds=feed_health(ctx.store), title="Feed health")

    return app
