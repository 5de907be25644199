"""Every request the Elasticsearch backend sends, checked against the official API
specification (``../shared/es-spec/9.2/types.ts``, the spec as TypeScript types).

The backend runs through setup, bulk writes (vectors on), every search shape (keyword,
phrases, OR, exclusions, filters, semantic, hybrid with its page and total requests), the
mapping check of an existing index, a reindex with its alias swap, a stray-index repair and
drop, over a recording transport (``tests/support/es_recorder.py``). Each recorded request
becomes a typed constant (``const r3: T.SearchRequest = {...}``) and ``tsc --strict`` must
accept them all: an unknown key, a misspelt option or a wrong value type anywhere in a body
is a compile error. A control file with known-bad bodies must be rejected, so the check can
fail. Skipped with the reason when the spec or the TypeScript compiler is absent
(``.ci/run`` installs the compiler: ``make esspec-tools``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.search.base import SearchQuery
from pipeline.search.elastic import ElasticSearch
from pipeline.settings import SearchSettings
from tests.support.es_recorder import RecordedRequest, recording_node_class
from tests.test_search_contract import CORPUS, _vector

pytestmark = pytest.mark.esspec

ROOT = Path(__file__).resolve().parents[1]
SPEC_ENV = "NEWSWATCH_ES_SPEC_DIR"
SPEC_VERSION = "9.2"
TSC = ROOT / ".cache" / "tsc" / "node_modules" / ".bin" / "tsc"

# (method, path pattern, spec request type); {name} segments become request fields.
ROUTES = [
    ("PUT", "/_index_template/{name}", "IndicesPutIndexTemplateRequest"),
    ("HEAD", "/_index_template/{name}", "IndicesExistsIndexTemplateRequest"),
    ("DELETE", "/_index_template/{name}", "IndicesDeleteIndexTemplateRequest"),
    ("HEAD", "/_alias/{name}", "IndicesExistsAliasRequest"),
    ("GET", "/_alias/{name}", "IndicesGetAliasRequest"),
    ("POST", "/_aliases", "IndicesUpdateAliasesRequest"),
    ("PUT", "/_bulk", "BulkRequest"),
    ("POST", "/_bulk", "BulkRequest"),
    ("GET", "/{index}/_mapping", "IndicesGetMappingRequest"),
    ("PUT", "/{index}/_mapping", "IndicesPutMappingRequest"),
    ("POST", "/{index}/_refresh", "IndicesRefreshRequest"),
    ("POST", "/{index}/_count", "CountRequest"),
    ("POST", "/{index}/_search", "SearchRequest"),
    ("GET", "/{index}/_doc/{id}", "GetRequest"),
    ("HEAD", "/{index}", "IndicesExistsRequest"),
    ("PUT", "/{index}", "IndicesCreateRequest"),
    ("DELETE", "/{index}", "IndicesDeleteRequest"),
]
# What the backend must have sent for the capture to count as complete.
REQUIRED = {"IndicesPutIndexTemplateRequest", "IndicesCreateRequest", "BulkRequest",
            "IndicesGetMappingRequest", "IndicesPutMappingRequest", "SearchRequest",
            "IndicesUpdateAliasesRequest", "IndicesDeleteRequest", "CountRequest"}


def spec_types() -> Path | None:
    """types.ts from $NEWSWATCH_ES_SPEC_DIR, else ../shared/es-spec beside the checkout."""
    base = Path(os.environ.get(SPEC_ENV) or ROOT.parent / "shared" / "es-spec")
    types = base / SPEC_VERSION / "types.ts"
    return types if types.is_file() else None


@pytest.fixture(scope="module")
def types_ts() -> Path:
    types = spec_types()
    if types is None:
        pytest.skip(f"Elasticsearch API spec not found: set {SPEC_ENV} or put es-spec/"
                    f"{SPEC_VERSION}/types.ts in ../shared beside the checkout")
    if not TSC.is_file():
        pytest.skip("TypeScript compiler not installed: run `make esspec-tools` "
                    "(npm install --prefix .cache/tsc)")
    return types


def _route(request: RecordedRequest) -> tuple[str, dict[str, str]]:
    for method, pattern, type_name in ROUTES:
        if method != request.method:
            continue
        regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern)) + "$"
        match = re.match(regex, request.path)
        if match:
            return type_name, match.groupdict()
    raise AssertionError(f"no spec route for {request.method} {request.path}")


def _param(value: str) -> object:
    if value in ("true", "false"):
        return value == "true"
    return int(value) if value.isdigit() else value


def typed_constants(requests: list[RecordedRequest]) -> tuple[list[str], set[str]]:
    """One TypeScript constant per request (bulk: its action lines as operations)."""
    lines: list[str] = []
    used: set[str] = set()
    for n, request in enumerate(requests):
        type_name, path_fields = _route(request)
        used.add(type_name)
        fields: dict[str, object] = {**path_fields,
                                     **{k: _param(v) for k, v in request.params.items()}}
        if type_name == "BulkRequest":
            operations, i = [], 0
            while i < len(request.body):
                operations.append(request.body[i])
                i += 1 if "delete" in request.body[i] else 2
            lines.append(f"export const r{n}: T.BulkRequest = {json.dumps(fields)};")
            lines.append(f"export const r{n}_operations: T.BulkOperationContainer[] = "
                         f"{json.dumps(operations)};")
            continue
        if request.body is not None:
            fields["body"] = request.body
        lines.append(f"export const r{n}: T.{type_name} = {json.dumps(fields)};")
    return lines, used


def capture() -> list[RecordedRequest]:
    """Drive the backend through every request shape it can build."""
    node = recording_node_class()
    settings = SearchSettings(url="http://127.0.0.1:9", vectors=True, index_prefix="nwspec")
    es = ElasticSearch(settings, node_class=node, max_retries=0, initial_backoff=0.0)

    def answer(index: str, body: dict) -> list[tuple[str, float]]:
        query = json.dumps(body.get("query", {}))
        ids = re.findall(r'"values": \[([^\]]*)\]', query)
        if ids:
            return [(i.strip().strip('"'), 1.0) for i in ids[0].split(",")]
        if "knn" in body:
            return [("a6", 0.99), ("a1", 0.7)]
        return [("a1", 4.0), ("a2", 1.5)]

    node.search_handler = staticmethod(answer)
    es.index([replace(CORPUS[0], embedding=None)])  # index created before any vector
    es.index(list(CORPUS[1:]))
    es.index_stories([{"story_id": "s1", "title": "Taiwan Strait", "article_count": 2,
                       "first_seen_at": datetime(2024, 3, 1, tzinfo=UTC),
                       "last_seen_at": datetime(2024, 3, 5, tzinfo=UTC),
                       "sources": ["Reuters", "BBC"]}])
    es.delete(["a3", "missing"])
    es.count()
    filters = {"since": datetime(2024, 3, 1, tzinfo=UTC), "until": datetime(2024, 4, 1,
               tzinfo=UTC), "sources": ["AP", "BBC"], "story_id": "s1"}
    texts = ["taiwan", '"Taiwan Strait"', "china OR taiwan", 'taiwan -"chip stocks" NOT x',
             "Zürich summit"]
    for text in texts:
        es.search(SearchQuery(text=text, mode="keyword"))
        es.search(SearchQuery(text=text, mode="keyword", by_story=True, limit=5, **filters))
        es.search(SearchQuery(text=text, mode="hybrid", vector=_vector(5)))
        es.search(SearchQuery(text=text, mode="hybrid", vector=_vector(5), **filters))
    es.search(SearchQuery(text="", mode="semantic", vector=_vector(5), limit=3))
    es.search(SearchQuery(text="", mode="semantic", vector=_vector(5), **filters))
    hybrid = SearchQuery(text='taiwan "Taiwan Strait" -baseball', mode="hybrid",
                         vector=_vector(0), **filters)
    es._search(es.matching_body(hybrid, ["a6", "a7"]))

    # Another process on the existing layout: mapping check, a field added in place.
    del node.indices[next(iter(es._backing(es.articles_alias)))]["mappings"]["properties"][
        "feeds"]
    again = ElasticSearch(settings, node_class=node, max_retries=0)
    again.ensure_ready()
    # Reindex: a new backing index, the atomic alias swap, the old index deleted.
    target = again.begin_rebuild()
    again.index(list(CORPUS), target=target)
    again.finish_rebuild(target)
    again.abort_rebuild(again.begin_rebuild())
    again.clear()
    # A stray concrete index where the alias belongs: found at setup, replaced by reindex.
    again.drop()
    node.indices["nwspec-articles"] = {"mappings": {}, "aliases": {}, "docs": {}}
    stray = ElasticSearch(settings, node_class=node, max_retries=0)
    stray.ensure_ready()
    target = stray.begin_rebuild()
    stray.finish_rebuild(target)
    stray.drop()
    for backend in (es, again, stray):
        backend.close()
    return list(node.requests)


BAD_BODIES = """
export const bad1: T.SearchRequest = {index: "x", body: {highlight: {max_analyzer_offset: 5,
  fields: {text: {}}}}};
export const bad2: T.SearchRequest = {index: "x", body: {knn: {field: "embedding", k: "ten"}}};
export const bad3: T.IndicesUpdateAliasesRequest = {body: {actions: [{swap: {index: "a"}}]}};
"""


def test_every_request_body_compiles_against_the_spec(types_ts, tmp_path):
    requests = capture()
    constants, used = typed_constants(requests)
    assert used >= REQUIRED, f"not exercised: {sorted(REQUIRED - used)}"
    searches = [r.body for r in requests if r.path.endswith("/_search")]
    assert any("knn" in body for body in searches)
    assert any("knn" not in body and "highlight" in body for body in searches)
    assert any('"ids"' in json.dumps(body) for body in searches)
    bulk_params = [r.params for r in requests if r.path.endswith("/_bulk")]
    assert {"require_alias": "true"} in bulk_params
    header = f'import type * as T from {json.dumps(str(types_ts.with_suffix("")))};\n'
    good, bad = tmp_path / "requests.ts", tmp_path / "control.ts"
    good.write_text(header + "\n".join(constants) + "\n")
    bad.write_text(header + BAD_BODIES)
    (tmp_path / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"strict": True, "noEmit": True, "target": "es2022",
                            "module": "commonjs", "moduleResolution": "node",
                            "types": [], "lib": ["es2022"], "skipLibCheck": True},
        "files": [str(good), str(bad)]}))
    done = subprocess.run([str(TSC), "-p", str(tmp_path / "tsconfig.json"), "--pretty", "false"],
                          capture_output=True, text=True, timeout=600)
    errors = [line for line in done.stdout.splitlines() if "error TS" in line]
    assert not [e for e in errors if "requests.ts" in e or "types.ts" in e], "\n".join(errors)
    for name in ("bad1", "bad2", "bad3"):
        line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1)
                    if f"const {name}" in text)
        assert any(f"control.ts({line}," in e or f"control.ts({line + 1}," in e
                   for e in errors), f"{name} was not rejected:\n" + "\n".join(errors)
