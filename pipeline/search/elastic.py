"""Search on Elasticsearch 9.x (official client): the backend for large archives.

Layout (created on first use, idempotently): composable index templates
``<prefix>-articles`` / ``<prefix>-stories`` and one backing index each
(``<prefix>-articles-000001``) behind a write alias (``<prefix>-articles``). Mappings are
``dynamic: strict`` and compared with what the run needs on start-up. Documents are keyed by
``article_id`` (``_id``), so writes are idempotent upserts, sent with ``require_alias`` so a
write can never create a stray index. ``reindex`` builds a new backing index and swaps the
alias in one atomic step.

Queries: BM25 over title^3 and text (English analyzer, plus an ASCII-folded subfield so
``Zurich`` finds ``Zürich`` as in SQLite), filters on every request. Hybrid (the default
mode) asks for the keyword list and the kNN list separately and combines them client-side
on one scale (``base.fuse_hybrid``, the same code as SQLite; no RRF retriever, which needs a
paid licence).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
from elastic_transport import ConnectionTimeout
from elasticsearch import (
    ApiError,
    AuthenticationException,
    AuthorizationException,
    BadRequestError,
    Elasticsearch,
    NotFoundError,
    helpers,
)
from elasticsearch import ConnectionError as EsConnectionError

from pipeline.cjk import has_cjk, query_variants
from pipeline.search.base import (
    KEYWORD_DEPTH,
    SEMANTIC_DEPTH,
    FusedHit,
    HybridPolicy,
    ParsedQuery,
    SearchAccessDenied,
    SearchDocument,
    SearchHit,
    SearchMappingMismatch,
    SearchQuery,
    SearchResults,
    SearchUnavailable,
    check_query,
    fuse_hybrid,
    group_by_story,
    leading_snippet,
    parse_query_text,
)
from pipeline.settings import SearchSettings

log = logging.getLogger(__name__)

TITLE_BOOST = 3.0
FOLDED_BOOST = 0.5  # the folded subfields only rescue diacritics-free spellings
SNIPPET_CHARS = 160
# Highlight at most this many characters of a field (the index default): a longer article is
# highlighted in its first million characters instead of failing the whole search with 400.
HIGHLIGHT_MAX_ANALYZED_OFFSET = 1_000_000
# Statuses that mean "try again later" (records stay un-marked, indexing catches up).
# 401/403 are not among them: wrong credentials or missing privileges never fix themselves.
TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}
ACCESS_STATUSES = {401, 403}
REINDEX_FIX = "run `newswatch reindex` to rebuild it with the current layout"

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


def neighbour_clauses(parsed: ParsedQuery) -> list[dict[str, Any]]:
    """What a semantic neighbour must satisfy besides the filters: the quoted clauses, and
    none of the exclusions (the kNN ``filter`` of a hybrid query)."""
    clauses: list[dict[str, Any]] = []
    for clause in parsed.phrase_clauses():
        alternatives = [_phrase_query(phrase, positive=True) for phrase in clause]
        clauses.append(alternatives[0] if len(alternatives) == 1 else
                       {"bool": {"should": alternatives, "minimum_should_match": 1}})
    if parsed.excluded:
        clauses.append({"bool": {"must_not": [_phrase_query(p, positive=False)
                                              for p in parsed.excluded]}})
    return clauses


def highlight_spec() -> dict[str, Any]:
    """``[[ ]]``-marked plain-text snippets of the body; every hit gets one."""
    return {
        "pre_tags": ["[["], "post_tags": ["]]"], "encoder": "default",
        "max_analyzed_offset": HIGHLIGHT_MAX_ANALYZED_OFFSET,
        "fields": {
            "text": {"number_of_fragments": 1, "fragment_size": SNIPPET_CHARS,
                     "no_match_size": SNIPPET_CHARS},
            "text.folded": {"number_of_fragments": 1, "fragment_size": SNIPPET_CHARS},
        },
    }


def _unit_vector(values: Sequence[float] | None) -> list[float] | None:
    if values is None or not len(values):
        return None
    vector = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    # Cosine rejects zero vectors; NaN/inf would make the whole bulk line unparsable.
    return None if norm == 0.0 or not np.isfinite(norm) else (vector / norm).tolist()


def _reason(exc: ApiError) -> str:
    """The cluster's own one-line reason for a refusal."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    reason = error.get("reason") if isinstance(error, dict) else error
    return " ".join(str(reason or exc.message or exc.error).split())[:400]


def _missing_target(error: Any) -> bool:
    """A bulk item refused because the alias is gone (``require_alias``): set up again and
    resend later, never let the write create an index of that name."""
    return isinstance(error, dict) and error.get("type") in (
        "aliases_not_found_exception", "index_not_found_exception")


def _mapping_rejection(error: Any) -> bool:
    """A bulk item refused because the live mapping cannot hold the document."""
    if not isinstance(error, dict):
        return False
    reason = str(error.get("reason") or "") + str((error.get("caused_by") or {}).get("reason"))
    return (error.get("type") == "strict_dynamic_mapping_exception"
            or ("embedding" in reason and "dim" in reason))


class ElasticSearch:
    """Elasticsearch backend. ``client`` or ``node_class`` may be injected (tests, proxies)."""

    name = "elasticsearch"

    def __init__(self, settings: SearchSettings, dims: int | None = None, *,
                 client: Elasticsearch | None = None, node_class: type | None = None,
                 request_timeout: float = 10.0, max_retries: int = 3,
                 initial_backoff: float = 2.0, refresh: bool = True,
                 dims_provider: Callable[[], int] | None = None,
                 hybrid: HybridPolicy | None = None) -> None:
        self.settings = settings
        self.dims = dims
        self.configured_dims = dims
        self.dims_provider = dims_provider
        self.vectors = settings.vectors
        self.hybrid = hybrid or HybridPolicy()
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
        self._live_dims: int | None = None
        # Why the live articles index cannot take this run's documents (None: it can).
        self._layout_problem: str | None = None

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

    def _access_denied(self, what: str, status: int, reason: str) -> SearchAccessDenied:
        if status == 401:
            return SearchAccessDenied(
                f"elasticsearch rejected the credentials during {what} (401): check "
                f"search.api_key or search.username/search.password ({reason})")
        return SearchAccessDenied(
            f"elasticsearch denied {what} (403): the key or user needs the privileges the "
            f"message names on {self.settings.index_prefix}-* ({reason})")

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Unreachable or overloaded cluster -> SearchUnavailable (catch up later); refused
        credentials or privileges -> SearchAccessDenied (fails the stage with the reason)."""
        try:
            yield
        except (EsConnectionError, ConnectionTimeout) as exc:
            raise SearchUnavailable(f"elasticsearch unreachable during {what}: {exc}") from exc
        except (AuthenticationException, AuthorizationException) as exc:
            raise self._access_denied(what, exc.status_code, _reason(exc)) from exc
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
        """Templates, then a backing index behind each write alias; compare the live articles
        mapping with what this run needs (see :meth:`_check_layout`)."""
        if self._ready:
            return
        with self._guard("setup"):
            self._ensure(self.articles_alias, article_mappings(self.vectors, self.dims))
            self._ensure(self.stories_alias, story_mappings())
        self._ready = True

    def _index_body(self, mappings: dict[str, Any]) -> dict[str, Any]:
        return {"settings": {"number_of_shards": 1, "analysis": _FOLDED_ANALYSIS},
                "mappings": mappings}

    def _put_template(self, alias: str, mappings: dict[str, Any]) -> None:
        """Keep the template current; a key that may not manage templates keeps the old one
        (every index newswatch creates carries its mapping explicitly anyway)."""
        try:
            self.client.indices.put_index_template(
                name=alias, index_patterns=[f"{alias}-*"], priority=200,
                template=self._index_body(mappings), meta={"managed_by": "newswatch"})
        except AuthorizationException as exc:
            log.warning("elasticsearch: may not update index template %s (%s); keeping the "
                        "existing one", alias, _reason(exc))

    def _stray_index(self, alias: str) -> bool:
        """A concrete index where the alias belongs (auto-created by an old write)."""
        return bool(self.client.indices.exists(index=alias))

    def _ensure(self, alias: str, mappings: dict[str, Any]) -> None:
        indices = self.client.indices
        if not indices.exists_alias(name=alias):
            if self._stray_index(alias):
                stray = (f"elasticsearch index {alias} is a concrete index, not newswatch's "
                         "alias (a write created it)")
                if alias == self.articles_alias:
                    self._layout_problem = f"{stray}; {REINDEX_FIX}"
                    return
                raise SearchMappingMismatch(
                    f"{stray}: delete that index, then run `newswatch reindex`")
            self._put_template(alias, mappings)
            try:
                indices.create(index=f"{alias}-000001", **self._index_body(mappings),
                               aliases={alias: {"is_write_index": True}})
            except BadRequestError as exc:
                if exc.error != "resource_already_exists_exception":
                    raise
                if alias == self.articles_alias:  # another process won: check its layout
                    self._check_layout(mappings)
                return
            if alias == self.articles_alias:
                self._layout_problem = None
                self._live_dims = self.dims
            return
        self._put_template(alias, mappings)
        if alias == self.articles_alias:
            self._check_layout(mappings)

    def _live_properties(self, alias: str) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for body in self.client.indices.get_mapping(index=alias).body.values():
            properties.update((body.get("mappings") or {}).get("properties", {}))
        return properties

    def _check_layout(self, mappings: dict[str, Any]) -> None:
        """Compare the live articles mapping with this run's: a vector field it lacks or
        vectors of other dims are a layout problem (the documents would be refused); plain
        fields it lacks are added in place."""
        live = self._live_properties(self.articles_alias)
        embedding = live.get("embedding") or {}
        self._live_dims = embedding.get("dims")
        self._layout_problem = None
        if self.vectors and "embedding" not in live:
            self._layout_problem = (
                f"elasticsearch index {self.articles_alias} has no vector field but "
                f"search.vectors is on; {REINDEX_FIX} (or set search.vectors: false)")
        else:
            self._check_dims()
        missing = {k: v for k, v in mappings["properties"].items()
                   if k not in live and k != "embedding"}
        if missing:
            try:
                self.client.indices.put_mapping(index=self.articles_alias, properties=missing)
            except AuthorizationException as exc:
                self._layout_problem = (
                    f"elasticsearch index {self.articles_alias} lacks the fields "
                    f"{', '.join(sorted(missing))} and this key may not add them "
                    f"({_reason(exc)}); {REINDEX_FIX}")

    def _check_dims(self, dims: int | None = None) -> None:
        dims = dims or self.dims
        if self.vectors and dims and self._live_dims and dims != self._live_dims:
            self._layout_problem = (
                f"elasticsearch index {self.articles_alias} holds {self._live_dims}-dimension "
                f"vectors but the embedding model makes {dims}; {REINDEX_FIX}")

    def _require_layout(self) -> None:
        if self._layout_problem:
            raise SearchMappingMismatch(self._layout_problem)

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
            # A vector from another model (an old version) is left out, not sent to be refused.
            if vector is not None and (self.dims is None or len(vector) == self.dims):
                source["embedding"] = vector
        return source

    def _bulk(self, actions: list[dict[str, Any]], what: str, index: str,
              ignore: Sequence[int] = (), require_alias: bool = True) -> int:
        """streaming_bulk with 429 retries; transient item failures -> SearchUnavailable,
        refused privileges -> SearchAccessDenied, mapping refusals -> SearchMappingMismatch."""
        ok = 0
        rejected: list[str] = []
        transient: list[str] = []
        denied: list[str] = []
        unmappable: list[str] = []
        # Into the alias: never let a write create a concrete index of that name.
        options = {"require_alias": True} if require_alias else {}
        with self._guard(what):
            for success, item in helpers.streaming_bulk(
                    self.client, actions, chunk_size=500, max_retries=self.max_retries,
                    initial_backoff=self.initial_backoff, raise_on_error=False,
                    raise_on_exception=True, ignore_status=tuple(ignore), **options):
                result = next(iter(item.values()))
                status = int(result.get("status", 0))
                error = result.get("error")
                if success or status in ignore:
                    ok += 1
                elif status in TRANSIENT_STATUSES or _missing_target(error):
                    transient.append(str(result.get("_id")))
                elif status in ACCESS_STATUSES:
                    reason = error.get("reason") if isinstance(error, dict) else error
                    denied.append(" ".join(str(reason).split())[:400])
                elif _mapping_rejection(error):
                    unmappable.append(f"{result.get('_id')}: {error.get('reason')}")
                else:
                    rejected.append(f"{result.get('_id')}: {error}")
            if self.refresh and ok:
                self.client.indices.refresh(index=index)
        if denied:
            raise self._access_denied(what, 403, denied[0])
        if unmappable:
            raise SearchMappingMismatch(
                f"elasticsearch index {index} refused {len(unmappable)} documents its mapping "
                f"cannot hold (e.g. {unmappable[0][:300]}); {REINDEX_FIX}")
        if transient:
            self._ready = False  # a vanished alias is set up again on the next call
            raise SearchUnavailable(f"elasticsearch {what}: {len(transient)} documents refused "
                                    f"after retries (e.g. {transient[0]})")
        if rejected:
            # Permanent (per-document) errors: resending the same document cannot help.
            log.error("elasticsearch %s rejected %d documents: %s", what, len(rejected),
                      "; ".join(rejected[:5]))
        return ok

    def index(self, documents: list[SearchDocument], *, target: str | None = None) -> int:
        """Upsert by ``_id`` = article_id into the alias (or a rebuild's new index). Returns
        the number accepted (per-document rejections are logged)."""
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
        if target is None:
            self._check_dims()
            self._require_layout()
        index = target or self.articles_alias
        actions = [{"_op_type": "index", "_index": index, "_id": doc.article_id,
                    "_source": self._source(doc)} for doc in documents]
        accepted = self._bulk(actions, "index", index, require_alias=target is None)
        if self._live_dims is None and self.dims and target is None:
            self._live_dims = self.dims  # the first vectors fixed the index's dims
        return accepted

    def delete(self, article_ids: list[str]) -> None:
        if not article_ids:
            return
        self.ensure_ready()
        actions = [{"_op_type": "delete", "_index": self.articles_alias, "_id": article_id}
                   for article_id in article_ids]
        self._bulk(actions, "delete", self.articles_alias, ignore=(404,))

    def _backing(self, alias: str) -> list[str]:
        try:
            return sorted(self.client.indices.get_alias(name=alias).body)
        except NotFoundError:
            return []

    def begin_rebuild(self) -> str:
        """Create a new, empty backing index (not yet behind the alias) with the current
        layout; searches and writes keep using the live index until :meth:`finish_rebuild`."""
        mappings = article_mappings(self.vectors, self.configured_dims)
        name = f"{self.articles_alias}-{datetime.now(UTC):%Y%m%d%H%M%S%f}"
        with self._guard("reindex"):
            self._put_template(self.articles_alias, mappings)
            self.client.indices.create(index=name, **self._index_body(mappings))
        self.dims = self.configured_dims  # the new index takes dims from its first vector
        return name

    def finish_rebuild(self, target: str | None) -> None:
        """Swap the alias onto the rebuilt index in one atomic request, then delete the old
        backing indices (and a stray concrete index squatting on the alias name)."""
        if target is None:
            return
        alias = self.articles_alias
        with self._guard("reindex"):
            old = self._backing(alias)
            actions: list[dict[str, Any]] = [
                {"add": {"index": target, "alias": alias, "is_write_index": True}}]
            actions += [{"remove": {"index": name, "alias": alias}}
                        for name in old if name != target]
            if not old and self._stray_index(alias):
                actions.append({"remove_index": {"index": alias}})
            self.client.indices.update_aliases(actions=actions)
            stale = [name for name in old if name != target]
            if stale:
                self.client.indices.delete(index=",".join(stale))
        self._ready = False
        self._layout_problem = None

    def abort_rebuild(self, target: str | None) -> None:
        """Delete a half-built index; the live one was never touched."""
        if target is None:
            return
        try:
            with self._guard("reindex"):
                self.client.indices.delete(index=target)
        except Exception as exc:  # the original failure matters more
            log.warning("elasticsearch: could not delete the unfinished index %s: %s",
                        target, exc)

    def clear(self) -> None:
        """Swap in an empty index built from the current layout (the old one is deleted)."""
        self.finish_rebuild(self.begin_rebuild())
        self.ensure_ready()

    def drop(self) -> None:
        """Remove every index and template this backend created (tests, uninstall)."""
        with self._guard("drop"):
            for alias in (self.articles_alias, self.stories_alias):
                backing = self._backing(alias)
                if backing:
                    self.client.indices.delete(index=",".join(backing))
                elif self._stray_index(alias):
                    self.client.indices.delete(index=alias)
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

    def delete_stories(self, story_ids: list[str]) -> None:
        """Remove story documents (stories consolidation folded into another; their articles
        are re-indexed under the survivor, whose document is upserted beside)."""
        if not story_ids:
            return
        self.ensure_ready()
        actions = [{"_op_type": "delete", "_index": self.stories_alias, "_id": story_id}
                   for story_id in story_ids]
        self._bulk(actions, "delete_stories", self.stories_alias, ignore=(404,))

    # ---- reads ---------------------------------------------------------------------------

    def count(self) -> int:
        self.ensure_ready()
        with self._guard("count"):
            return int(self.client.count(index=self.articles_alias)["count"])

    def _mode(self, query: SearchQuery) -> tuple[str, list[float] | None]:
        vector = _unit_vector(query.vector) if self.vectors else None
        return (query.mode if vector is not None else "keyword"), vector

    def search_body(self, query: SearchQuery) -> dict[str, Any] | None:
        """The one request of a keyword or semantic query (None when it cannot match).

        Hybrid queries use :meth:`hybrid_bodies` and :meth:`page_body` instead.
        """
        parsed = parse_query_text(query.text)
        mode, vector = self._mode(query)
        filters = filter_clauses(query)
        body: dict[str, Any] = {
            "size": query.limit, "track_total_hits": True,
            # Highlighting makes snippets; only a kNN-only request (nothing to highlight) also
            # fetches the text, for a leading-text snippet.
            "_source": {"excludes": ["embedding"] if mode == "semantic"
                        else ["text", "embedding"]},
            "highlight": highlight_spec(),
        }
        if mode == "semantic":
            knn: dict[str, Any] = {"field": "embedding", "query_vector": vector,
                                   "k": query.limit,
                                   "num_candidates": min(max(100, 2 * query.limit), 10_000)}
            if filters:
                knn["filter"] = filters
            body["knn"] = knn
            return body
        if parsed.empty:
            return None
        body["query"] = {"bool": {**text_query(parsed), "filter": filters}}
        return body

    def hybrid_bodies(self, query: SearchQuery) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The keyword request (ids and BM25 of the best KEYWORD_DEPTH matches) and the kNN
        request (the SEMANTIC_DEPTH nearest documents that satisfy the query's phrases,
        exclusions and filters) of a hybrid query; None when nothing can match."""
        parsed = parse_query_text(query.text)
        mode, vector = self._mode(query)
        if mode != "hybrid" or parsed.empty:
            return None
        filters = filter_clauses(query)
        keyword = {"size": KEYWORD_DEPTH, "track_total_hits": True, "_source": False,
                   "query": {"bool": {**text_query(parsed), "filter": filters}}}
        knn: dict[str, Any] = {"field": "embedding", "query_vector": vector,
                               "k": SEMANTIC_DEPTH, "num_candidates": 2 * SEMANTIC_DEPTH}
        neighbour_filter = [*filters, *neighbour_clauses(parsed)]
        if neighbour_filter:
            knn["filter"] = neighbour_filter
        return keyword, {"size": SEMANTIC_DEPTH, "_source": False, "knn": knn}

    @staticmethod
    def page_body(query: SearchQuery, article_ids: list[str]) -> dict[str, Any]:
        """Fetch one page of fused hits by id, highlighting the query's words."""
        parsed = parse_query_text(query.text)
        return {"size": len(article_ids), "_source": {"excludes": ["text", "embedding"]},
                "query": {"bool": {"filter": [{"ids": {"values": article_ids}}],
                                   "should": [{"bool": text_query(parsed)}]}},
                "highlight": highlight_spec()}

    @staticmethod
    def matching_body(query: SearchQuery, article_ids: list[str]) -> dict[str, Any]:
        """Which of ``article_ids`` satisfy the whole query (for the hybrid total)."""
        parsed = parse_query_text(query.text)
        return {"size": len(article_ids), "_source": False,
                "query": {"bool": {**text_query(parsed), "filter": [
                    *filter_clauses(query), {"ids": {"values": article_ids}}]}}}

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._guard("search"):
            return self.client.search(index=self.articles_alias, body=body).body

    def search(self, query: SearchQuery) -> SearchResults:
        check_query(query)
        mode, vector = self._mode(query)
        if mode != "keyword":
            self.ensure_ready()
            self._check_dims(len(vector or []))
            self._require_layout()
        if mode == "hybrid":
            return self._hybrid(query)
        body = self.search_body(query)
        if body is None:
            return SearchResults(hits=[], total=0,
                                 groups=[] if query.by_story else None)
        self.ensure_ready()
        response = self._search(body)
        hits = [self._hit(raw) for raw in response["hits"]["hits"]]
        return SearchResults(hits=hits, total=_total(response),
                             groups=group_by_story(hits) if query.by_story else None)

    def _hybrid(self, query: SearchQuery) -> SearchResults:
        """Keyword matches reordered by similarity, plus close neighbours (``fuse_hybrid``)."""
        bodies = self.hybrid_bodies(query)
        if bodies is None:
            return SearchResults(hits=[], total=0, groups=[] if query.by_story else None)
        keyword_response, knn_response = (self._search(body) for body in bodies)
        keyword = [(raw["_id"], float(raw["_score"] or 0.0))
                   for raw in keyword_response["hits"]["hits"]]
        # A cosine kNN hit scores (1 + cosine) / 2: back to the cosine the floor is set in.
        semantic = [(raw["_id"], 2.0 * float(raw["_score"] or 0.0) - 1.0)
                    for raw in knn_response["hits"]["hits"]]
        fused = fuse_hybrid(keyword, semantic, self.hybrid)
        keyword_total = _total(keyword_response)
        added = [hit.article_id for hit in fused if not hit.keyword_match]
        if added and keyword_total > len(keyword):  # the keyword list was cut
            matching = self._search(self.matching_body(query, added))
            added = sorted(set(added) - {raw["_id"] for raw in matching["hits"]["hits"]})
        hits = self._page(query, fused[:query.limit])
        return SearchResults(hits=hits, total=keyword_total + len(added),
                             groups=group_by_story(hits) if query.by_story else None)

    def _page(self, query: SearchQuery, fused: list[FusedHit]) -> list[SearchHit]:
        if not fused:
            return []
        response = self._search(self.page_body(query, [hit.article_id for hit in fused]))
        found = {raw["_id"]: raw for raw in response["hits"]["hits"]}
        return [dataclasses.replace(self._hit(found[hit.article_id]), score=hit.score)
                for hit in fused if hit.article_id in found]

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


def _total(response: dict[str, Any]) -> int:
    total = response["hits"]["total"]
    return int(total["value"] if isinstance(total, dict) else total)
