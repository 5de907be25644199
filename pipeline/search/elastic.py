"""Search on Elasticsearch 9 (official client): the backend for large archives.

Layout (created on first use, idempotently): composable index templates
``<prefix>-articles`` / ``<prefix>-stories`` and one backing index each
(``<prefix>-articles-000001``) behind a write alias (``<prefix>-articles``). Mappings are
``dynamic: strict``. Documents are keyed by ``article_id`` (``_id``), so writes are idempotent
upserts; the index can always be rebuilt from the SQL records.

Queries: BM25 over title^3 and text (English analyzer, plus an ASCII-folded subfield so
``Zurich`` finds ``Zürich`` as in SQLite), filters applied to both the query and the kNN
clause, and - when vectors are enabled and a query vector is given - a top-level ``knn`` in the
SAME request (scores add up; no RRF retriever, which needs a paid licence).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
from elastic_transport import ConnectionTimeout
from elasticsearch import (
    ApiError,
    AuthorizationException,
    BadRequestError,
    Elasticsearch,
    helpers,
)
from elasticsearch import ConnectionError as EsConnectionError

from pipeline.cjk import has_cjk, query_variants
from pipeline.search.base import (
    ParsedQuery,
    SearchDocument,
    SearchHit,
    SearchQuery,
    SearchResults,
    SearchUnavailable,
    check_query,
    group_by_story,
    leading_snippet,
    parse_query_text,
)
from pipeline.settings import SearchSettings

log = logging.getLogger(__name__)

TITLE_BOOST = 3.0
FOLDED_BOOST = 0.5  # the folded subfields only rescue diacritics-free spellings
SNIPPET_CHARS = 160
# Statuses that mean "try again later" (records stay un-marked, indexing catches up).
TRANSIENT_STATUSES = {401, 403, 408, 429, 500, 502, 503, 504}

_FOLDED_ANALYSIS = {
    "analyzer": {
        "newswatch_folded": {
            "type": "custom", "tokenizer": "standard", "filter": ["lowercase", "asciifolding"],
        },
    },
}


def _text_field(*, raw: bool = False) -> dict[str, Any]:
    fields: dict[str, Any] = {"folded": {"type": "text", "analyzer": "newswatch_folded"},
                              # built in: overlapping bigrams of CJK characters (docs/decisions)
                              "cjk": {"type": "text", "analyzer": "cjk"}}
    if raw:
        fields["raw"] = {"type": "keyword", "ignore_above": 1024}
    return {"type": "text", "analyzer": "english", "fields": fields}


def article_mappings(vectors: bool, dims: int | None) -> dict[str, Any]:
    """Explicit, strict mapping of an article document."""
    properties: dict[str, Any] = {
        "article_id": {"type": "keyword"},
        "title": _text_field(raw=True),
        "text": _text_field(),
        "url": {"type": "keyword", "index": False, "doc_values": False},
        "source": {"type": "keyword"},
        "published_at": {"type": "date"},
        "language": {"type": "keyword"},
        "story_id": {"type": "keyword"},
        "content_hash": {"type": "keyword"},
        "feeds": {"type": "keyword"},
    }
    if vectors:
        vector: dict[str, Any] = {
            "type": "dense_vector", "index": True, "similarity": "cosine",
            # Pinned: ES 9.1+ defaults to BBQ for 384+ dims; int8_hnsw keeps recall for MiniLM.
            "index_options": {"type": "int8_hnsw"},
        }
        if dims:
            vector["dims"] = dims  # else ES takes it from the first vector indexed
        properties["embedding"] = vector
    return {"dynamic": "strict", "properties": properties}


def story_mappings() -> dict[str, Any]:
    return {"dynamic": "strict", "properties": {
        "story_id": {"type": "keyword"},
        "title": _text_field(raw=True),
        "first_seen_at": {"type": "date"},
        "last_seen_at": {"type": "date"},
        "article_count": {"type": "integer"},
        "sources": {"type": "keyword"},
    }}


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _parse_date(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _phrase_query(phrase: str, *, positive: bool) -> dict[str, Any]:
    """One user phrase against title/text and their folded subfields, as match_phrase.

    Positive phrases made only of stopwords match everything (``zero_terms_query: all``) so
    ``the taiwan strait`` does not fail on ``the``; excluded ones then exclude nothing.
    """
    zero = "all" if positive else "none"
    fields = [("title", TITLE_BOOST), ("text", 1.0),
              ("title.folded", TITLE_BOOST * FOLDED_BOOST), ("text.folded", FOLDED_BOOST)]
    if has_cjk(phrase):  # English ranking stays as it was
        fields += [("title.cjk", TITLE_BOOST), ("text.cjk", 1.0)]
    return {"bool": {"should": [
        {"match_phrase": {field: {"query": phrase, "boost": boost, "zero_terms_query": zero}}}
        for field, boost in fields
    ], "minimum_should_match": 1}}


def text_query(parsed: ParsedQuery) -> dict[str, Any]:
    """A parsed query as an ES bool query (built from match_phrase only: no query parser)."""
    must = []
    for clause in parsed.clauses:
        alternatives = [_phrase_query(spelling, positive=True)
                        for phrase in clause for spelling in query_variants(phrase)]
        must.append(alternatives[0] if len(alternatives) == 1 else
                    {"bool": {"should": alternatives, "minimum_should_match": 1}})
    body: dict[str, Any] = {"must": must}
    if parsed.excluded:
        body["must_not"] = [_phrase_query(spelling, positive=False)
                            for p in parsed.excluded for spelling in query_variants(p)]
    return body


def filter_clauses(query: SearchQuery) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = []
    if query.since is not None or query.until is not None:
        bounds = {}
        if query.since is not None:
            bounds["gte"] = _iso(query.since)
        if query.until is not None:
            bounds["lt"] = _iso(query.until)
        filters.append({"range": {"published_at": bounds}})
    if query.sources:
        filters.append({"terms": {"source": list(query.sources)}})
    if query.story_id is not None:
        filters.append({"term": {"story_id": query.story_id}})
    return filters


def _unit_vector(values: Sequence[float] | None) -> list[float] | None:
    if values is None or not len(values):
        return None
    vector = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return None if norm == 0.0 else (vector / norm).tolist()  # cosine rejects zero vectors


class ElasticSearch:
    """Elasticsearch backend. ``client`` or ``node_class`` may be injected (tests, proxies)."""

    name = "elasticsearch"

    def __init__(self, settings: SearchSettings, dims: int | None = None, *,
                 client: Elasticsearch | None = None, node_class: type | None = None,
                 request_timeout: float = 10.0, max_retries: int = 3,
                 initial_backoff: float = 2.0, refresh: bool = True,
                 dims_provider: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.dims = dims
        self.dims_provider = dims_provider
        self.vectors = settings.vectors
        self.max_retries = max_retries
        self.initial_backoff = initial_backoff
        # Make writes visible to the next search (alerts search right after indexing).
        self.refresh = refresh
        prefix = settings.index_prefix
        self.articles_alias = f"{prefix}-articles"
        self.stories_alias = f"{prefix}-stories"
        self._owns_client = client is None
        self.client = client or self._make_client(settings, node_class, request_timeout)
        self._ready = False

    @staticmethod
    def _make_client(settings: SearchSettings, node_class: type | None,
                     request_timeout: float) -> Elasticsearch:
        kwargs: dict[str, Any] = {"request_timeout": request_timeout, "max_retries": 2,
                                  "retry_on_timeout": True}
        if settings.api_key:
            kwargs["api_key"] = settings.api_key
        elif settings.username:
            kwargs["basic_auth"] = (settings.username, settings.password or "")
        if settings.url.lower().startswith("https://"):
            kwargs["verify_certs"] = settings.verify_certs
            if settings.ca_certs:
                kwargs["ca_certs"] = settings.ca_certs
        if node_class is not None:
            kwargs["node_class"] = node_class
        return Elasticsearch(settings.url, **kwargs)

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Unreachable, overloaded or refusing cluster -> SearchUnavailable (catch up later)."""
        try:
            yield
        except (EsConnectionError, ConnectionTimeout) as exc:
            raise SearchUnavailable(f"elasticsearch unreachable during {what}: {exc}") from exc
        except ApiError as exc:
            if exc.status_code in TRANSIENT_STATUSES:
                raise SearchUnavailable(
                    f"elasticsearch refused {what}: {exc.status_code} {exc.error}") from exc
            raise

    # ---- setup ---------------------------------------------------------------------------

    def _vector_dims(self) -> int | None:
        if self.dims is None and self.dims_provider is not None:
            self.dims = int(self.dims_provider())
        return self.dims

    def ensure_ready(self) -> None:
        """Templates, then a backing index behind each write alias; add missing fields."""
        if self._ready:
            return
        with self._guard("setup"):
            articles = article_mappings(self.vectors, self.dims)
            self._ensure(self.articles_alias, articles)
            self._ensure(self.stories_alias, story_mappings())
        self._ready = True

    def _ensure(self, alias: str, mappings: dict[str, Any]) -> None:
        indices = self.client.indices
        template = {"settings": {"number_of_shards": 1, "analysis": _FOLDED_ANALYSIS},
                    "mappings": mappings}
        if not indices.exists_alias(name=alias):
            indices.put_index_template(name=alias, index_patterns=[f"{alias}-*"], priority=200,
                                       template=template, meta={"managed_by": "newswatch"})
            try:
                indices.create(index=f"{alias}-000001",
                               aliases={alias: {"is_write_index": True}})
            except BadRequestError as exc:
                if exc.error != "resource_already_exists_exception":  # another process won
                    raise
            return
        # Already set up. Keep the template current and add fields an older index lacks
        # (e.g. vectors switched on) - but a key allowed only to read/write may not manage
        # templates or mappings, and the existing layout still works without that.
        try:
            indices.put_index_template(name=alias, index_patterns=[f"{alias}-*"], priority=200,
                                       template=template, meta={"managed_by": "newswatch"})
            current = indices.get_mapping(index=alias)
            present: set[str] = set()
            for body in current.body.values():
                present |= set((body.get("mappings") or {}).get("properties", {}))
            missing = {k: v for k, v in mappings["properties"].items() if k not in present}
            if missing:
                indices.put_mapping(index=alias, properties=missing)
        except AuthorizationException as exc:
            log.warning("elasticsearch: cannot update template/mapping of %s (%s); using the "
                        "existing index as it is", alias, exc.error)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # ---- writes --------------------------------------------------------------------------

    def _source(self, doc: SearchDocument) -> dict[str, Any]:
        source: dict[str, Any] = {
            "article_id": doc.article_id, "title": doc.title or "", "text": doc.text or "",
            "url": doc.url, "source": doc.source, "published_at": _iso(doc.published_at),
            "language": doc.language, "story_id": doc.story_id,
            "content_hash": doc.content_hash, "feeds": list(doc.feeds or []),
        }
        if self.vectors:
            vector = _unit_vector(doc.embedding)
            if vector is not None:
                source["embedding"] = vector
        return source

    def _bulk(self, actions: list[dict[str, Any]], what: str, index: str,
              ignore: Sequence[int] = ()) -> int:
        """streaming_bulk with 429 retries; transient item failures -> SearchUnavailable."""
        ok = 0
        rejected: list[str] = []
        transient: list[str] = []
        with self._guard(what):
            for success, item in helpers.streaming_bulk(
                    self.client, actions, chunk_size=500, max_retries=self.max_retries,
                    initial_backoff=self.initial_backoff, raise_on_error=False,
                    raise_on_exception=True, ignore_status=tuple(ignore)):
                result = next(iter(item.values()))
                status = int(result.get("status", 0))
                if success or status in ignore:
                    ok += 1
                elif status in TRANSIENT_STATUSES:
                    transient.append(str(result.get("_id")))
                else:
                    rejected.append(f"{result.get('_id')}: {result.get('error')}")
            if self.refresh and actions:
                self.client.indices.refresh(index=index)
        if transient:
            raise SearchUnavailable(f"elasticsearch {what}: {len(transient)} documents refused "
                                    f"after retries (e.g. {transient[0]})")
        if rejected:
            # Permanent (mapping) errors: resending the same document cannot help; report them.
            log.error("elasticsearch %s rejected %d documents: %s", what, len(rejected),
                      "; ".join(rejected[:5]))
        return ok

    def index(self, documents: list[SearchDocument]) -> int:
        """Upsert by ``_id`` = article_id. Returns the number accepted (rejections are logged)."""
        if not documents:
            return 0
        if self.vectors and self.dims is None:
            first = next((d.embedding for d in documents if d.embedding is not None
                          and len(d.embedding)), None)
            if first is not None:
                self.dims = len(first)
            elif not self._ready:
                self._vector_dims()
        self.ensure_ready()
        actions = [{"_op_type": "index", "_index": self.articles_alias, "_id": doc.article_id,
                    "_source": self._source(doc)} for doc in documents]
        return self._bulk(actions, "index", self.articles_alias)

    def delete(self, article_ids: list[str]) -> None:
        if not article_ids:
            return
        self.ensure_ready()
        actions = [{"_op_type": "delete", "_index": self.articles_alias, "_id": article_id}
                   for article_id in article_ids]
        self._bulk(actions, "delete", self.articles_alias, ignore=(404,))

    def clear(self) -> None:
        """Delete the backing index and recreate it from the (current) template."""
        self.ensure_ready()
        with self._guard("clear"):
            backing = list(self.client.indices.get_alias(name=self.articles_alias).body)
            if backing:
                self.client.indices.delete(index=",".join(backing))
        self._ready = False
        self.ensure_ready()

    def drop(self) -> None:
        """Remove every index and template this backend created (tests, uninstall)."""
        with self._guard("drop"):
            for alias in (self.articles_alias, self.stories_alias):
                if self.client.indices.exists_alias(name=alias):
                    backing = list(self.client.indices.get_alias(name=alias).body)
                    self.client.indices.delete(index=",".join(backing))
                if self.client.indices.exists_index_template(name=alias):
                    self.client.indices.delete_index_template(name=alias)
        self._ready = False

    def index_stories(self, stories: list[dict[str, Any]]) -> int:
        """Upsert story documents (story_id, title, first/last_seen_at, article_count, sources)."""
        if not stories:
            return 0
        self.ensure_ready()
        actions = []
        for story in stories:
            source = {
                "story_id": story["story_id"], "title": story.get("title") or "",
                "first_seen_at": _iso(story.get("first_seen_at")),
                "last_seen_at": _iso(story.get("last_seen_at")),
                "article_count": int(story.get("article_count") or 0),
                "sources": list(story.get("sources") or []),
            }
            actions.append({"_op_type": "index", "_index": self.stories_alias,
                            "_id": story["story_id"], "_source": source})
        return self._bulk(actions, "index_stories", self.stories_alias)

    # ---- reads ---------------------------------------------------------------------------

    def count(self) -> int:
        self.ensure_ready()
        with self._guard("count"):
            return int(self.client.count(index=self.articles_alias)["count"])

    def search_body(self, query: SearchQuery) -> dict[str, Any] | None:
        """The request body for ``query`` (None when it cannot match anything)."""
        parsed = parse_query_text(query.text)
        vector = _unit_vector(query.vector) if self.vectors else None
        mode = query.mode if vector is not None else "keyword"
        filters = filter_clauses(query)
        body: dict[str, Any] = {
            "size": query.limit, "track_total_hits": True,
            # Highlighting makes snippets; only a kNN-only request (nothing to highlight) also
            # fetches the text, for a leading-text snippet.
            "_source": {"excludes": ["embedding"] if mode == "semantic"
                        else ["text", "embedding"]},
            "highlight": {
                "pre_tags": ["[["], "post_tags": ["]]"], "encoder": "default",
                "fields": {
                    "text": {"number_of_fragments": 1, "fragment_size": SNIPPET_CHARS,
                             "no_match_size": SNIPPET_CHARS},
                    "text.folded": {"number_of_fragments": 1, "fragment_size": SNIPPET_CHARS},
                },
            },
        }
        if mode in ("keyword", "hybrid") and not parsed.empty:
            body["query"] = {"bool": {**text_query(parsed), "filter": filters}}
        elif mode == "keyword":
            return None
        if mode in ("semantic", "hybrid"):
            knn: dict[str, Any] = {"field": "embedding", "query_vector": vector,
                                   "k": query.limit,
                                   "num_candidates": min(max(100, 2 * query.limit), 10_000)}
            if filters:
                knn["filter"] = filters
            body["knn"] = knn
        return body

    def search(self, query: SearchQuery) -> SearchResults:
        check_query(query)
        body = self.search_body(query)
        if body is None:
            return SearchResults(hits=[], total=0,
                                 groups=[] if query.by_story else None)
        self.ensure_ready()
        with self._guard("search"):
            response = self.client.search(index=self.articles_alias, body=body)
        hits = [self._hit(raw) for raw in response["hits"]["hits"]]
        total = response["hits"]["total"]
        total = int(total["value"] if isinstance(total, dict) else total)
        return SearchResults(hits=hits, total=total,
                             groups=group_by_story(hits) if query.by_story else None)

    @staticmethod
    def _hit(raw: dict[str, Any]) -> SearchHit:
        source = raw.get("_source") or {}
        highlight = raw.get("highlight") or {}
        snippet = ""
        for field in ("text", "text.folded"):
            fragments = highlight.get(field) or []
            if fragments and (not snippet or ("[[" in fragments[0] and "[[" not in snippet)):
                snippet = fragments[0]
        if not snippet and source.get("text"):
            snippet = leading_snippet(source["text"], SNIPPET_CHARS)
        return SearchHit(
            article_id=raw["_id"], title=source.get("title") or "", url=source.get("url"),
            source=source.get("source"), published_at=_parse_date(source.get("published_at")),
            snippet=snippet, score=float(raw.get("_score") or 0.0),
            story_id=source.get("story_id"))
