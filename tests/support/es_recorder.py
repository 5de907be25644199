"""TEST-ONLY transport node: records every HTTP request the Elasticsearch client sends and
answers from a small in-memory model of indices, aliases, templates and documents.

It lets the vector paths (``dense_vector`` mappings, kNN requests, the alias swap of a
reindex) run without a cluster, so that ``tests/test_es_spec.py`` can capture every request
body the backend builds and check it against the official API specification, and so that the
hybrid request flow can be tested. It is no search engine: ``_search`` answers come from
``search_handler`` (empty by default), and it models only what the backend relies on
(``require_alias`` refusing a concrete index, ``resource_already_exists_exception``, 404s).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

from elastic_transport import ApiResponseMeta, BaseNode, HttpHeaders
from elastic_transport._node import NodeApiResponse

SearchHandler = Callable[[str, dict[str, Any]], list[tuple[str, float]]]


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    body: Any  # parsed JSON, a list of NDJSON lines for _bulk, or None


def recording_node_class() -> type:
    """A fresh node class with its own state (the client creates the node instances)."""

    class RecordingNode(BaseNode):
        requests: ClassVar[list[RecordedRequest]] = []
        # name -> {"mappings", "aliases", "docs"}
        indices: ClassVar[dict[str, dict[str, Any]]] = {}
        templates: ClassVar[dict[str, dict[str, Any]]] = {}
        search_handler: ClassVar[SearchHandler | None] = None
        # Refusals: endpoint key ("GET _mapping", "PUT _bulk"; "*" = every request) -> 401/403.
        deny: ClassVar[dict[str, int]] = {}

        def perform_request(self, method: str, target: str, body: bytes | None = None,
                            headers: HttpHeaders | None = None, **kwargs: Any) -> Any:
            cls = type(self)
            parts = urlsplit(target)
            path = unquote(parts.path)
            params = dict(parse_qsl(parts.query))
            parsed: Any = None
            if body:
                text = body.decode()
                parsed = ([json.loads(line) for line in text.splitlines() if line.strip()]
                          if path.endswith("/_bulk") else json.loads(text))
            cls.requests.append(RecordedRequest(method, path, params, parsed))
            status, payload = cls._answer(method, path, params, parsed)
            meta = ApiResponseMeta(
                status=status, http_version="1.1", duration=0.0, node=self.config,
                headers=HttpHeaders({"content-type": "application/json",
                                     "X-Elastic-Product": "Elasticsearch"}))
            data = b"" if method == "HEAD" else json.dumps(payload).encode()
            return NodeApiResponse(meta, data)

        # ---- the model ---------------------------------------------------------------------

        @classmethod
        def _aliases(cls) -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for name, index in cls.indices.items():
                for alias in index["aliases"]:
                    out.setdefault(alias, []).append(name)
            return out

        @classmethod
        def _resolve(cls, name: str) -> list[str]:
            names: list[str] = []
            for part in name.split(","):
                if part in cls.indices:
                    names.append(part)
                else:
                    names.extend(cls._aliases().get(part, []))
            return names

        @classmethod
        def _write_index(cls, name: str) -> str | None:
            if name in cls.indices:
                return name
            backing = cls._aliases().get(name, [])
            for index in backing:
                if cls.indices[index]["aliases"][name].get("is_write_index"):
                    return index
            return backing[0] if len(backing) == 1 else None

        @staticmethod
        def _error(status: int, kind: str, reason: str) -> tuple[int, dict[str, Any]]:
            return status, {"error": {"type": kind, "reason": reason}, "status": status}

        @classmethod
        def _answer(cls, method: str, path: str, params: dict[str, str],
                    body: Any) -> tuple[int, Any]:
            segments = [s for s in path.split("/") if s]
            key = f"{method} {segments[-1] if segments else ''}"
            status = cls.deny.get(key) or cls.deny.get("*")
            if status == 401:
                return cls._error(401, "security_exception", "unable to authenticate with "
                                  "provided credentials and anonymous access is not allowed")
            if status:
                return cls._error(403, "security_exception",
                                  f"action [{key}] is unauthorized for API key id [test], "
                                  "this action is granted by the index privileges "
                                  "[view_index_metadata,manage,all]")
            if segments[:1] == ["_index_template"]:
                name = segments[1]
                if method == "PUT":
                    cls.templates[name] = body
                    return 200, {"acknowledged": True}
                if method == "DELETE":
                    cls.templates.pop(name, None)
                    return 200, {"acknowledged": True}
                return (200 if name in cls.templates else 404), {}
            if segments[:1] == ["_alias"]:
                backing = cls._aliases().get(segments[1], [])
                if not backing:
                    return cls._error(404, "aliases_not_found_exception", "missing")
                return 200, {i: {"aliases": {segments[1]: cls.indices[i]["aliases"][
                    segments[1]]}} for i in backing}
            if segments == ["_aliases"]:
                return cls._update_aliases(body)
            if segments and segments[-1] == "_bulk":
                return cls._bulk(segments[0] if len(segments) > 1 else None, params, body)
            if len(segments) == 1:
                return cls._index_op(method, segments[0], body)
            names = cls._resolve(segments[0])
            if not names:
                return cls._error(404, "index_not_found_exception", segments[0])
            action = segments[1]
            if action == "_mapping":
                if method == "PUT":
                    for name in names:
                        cls.indices[name]["mappings"].setdefault("properties", {}).update(
                            body.get("properties", {}))
                    return 200, {"acknowledged": True}
                return 200, {n: {"mappings": cls.indices[n]["mappings"]} for n in names}
            if action == "_refresh":
                return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
            if action == "_count":
                return 200, {"count": sum(len(cls.indices[n]["docs"]) for n in names)}
            if action == "_doc":
                for name in names:
                    if segments[2] in cls.indices[name]["docs"]:
                        return 200, {"_index": name, "_id": segments[2], "found": True,
                                     "_source": cls.indices[name]["docs"][segments[2]]}
                return 404, {"found": False}
            if action == "_search":
                hits = cls.search_handler(segments[0], body or {}) if cls.search_handler else []
                return 200, {"took": 1, "timed_out": False,
                             "_shards": {"total": 1, "successful": 1, "skipped": 0,
                                         "failed": 0},
                             "hits": {"total": {"value": len(hits), "relation": "eq"},
                                      "max_score": max((s for _, s in hits), default=None),
                                      "hits": [cls._search_hit(names, i, s) for i, s in hits]}}
            return cls._error(400, "unsupported", f"{method} {path}")

        @classmethod
        def _search_hit(cls, names: list[str], doc_id: str, score: float) -> dict[str, Any]:
            for name in names:
                if doc_id in cls.indices[name]["docs"]:
                    source = dict(cls.indices[name]["docs"][doc_id])
                    text = source.get("text") or ""
                    return {"_index": name, "_id": doc_id, "_score": score,
                            "_source": {k: v for k, v in source.items()
                                        if k not in ("text", "embedding")},
                            "highlight": {"text": [text[:160]]}}
            return {"_index": names[0], "_id": doc_id, "_score": score}

        @classmethod
        def _index_op(cls, method: str, name: str, body: Any) -> tuple[int, Any]:
            if method == "HEAD":
                return (200 if cls._resolve(name) else 404), {}
            if method == "DELETE":
                for index in cls._resolve(name):
                    cls.indices.pop(index, None)
                return 200, {"acknowledged": True}
            if method == "PUT":
                if name in cls.indices:
                    return cls._error(400, "resource_already_exists_exception", name)
                body = body or {}
                cls.indices[name] = {"mappings": json.loads(json.dumps(body.get("mappings")
                                                                       or {})),
                                     "aliases": dict(body.get("aliases") or {}), "docs": {}}
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}
            return cls._error(400, "unsupported", f"{method} /{name}")

        @classmethod
        def _update_aliases(cls, body: dict[str, Any]) -> tuple[int, Any]:
            for action in body.get("actions", []):
                (kind, spec), = action.items()
                if kind == "add":
                    cls.indices[spec["index"]]["aliases"][spec["alias"]] = {
                        k: v for k, v in spec.items() if k not in ("index", "alias")}
                elif kind == "remove":
                    cls.indices[spec["index"]]["aliases"].pop(spec["alias"], None)
                elif kind == "remove_index":
                    cls.indices.pop(spec["index"], None)
            return 200, {"acknowledged": True}

        @classmethod
        def _bulk(cls, default_index: str | None, params: dict[str, str],
                  lines: list[dict[str, Any]]) -> tuple[int, Any]:
            require_alias = params.get("require_alias") == "true"
            items = []
            i = 0
            while i < len(lines):
                (op, meta), = lines[i].items()
                source = lines[i + 1] if op != "delete" else None
                i += 1 if op == "delete" else 2
                name = meta.get("_index") or default_index or ""
                doc_id = meta.get("_id")
                if require_alias and name not in cls._aliases():
                    items.append({op: {"_index": name, "_id": doc_id, "status": 404, "error": {
                        "type": "aliases_not_found_exception",
                        "reason": f"{name} is not an alias"}}})
                    continue
                index = cls._write_index(name)
                if index is None:  # what a real cluster does without require_alias
                    cls.indices[name] = {"mappings": {}, "aliases": {}, "docs": {}}
                    index = name
                docs = cls.indices[index]["docs"]
                if op == "delete":
                    found = docs.pop(doc_id, None) is not None
                    items.append({op: {"_index": index, "_id": doc_id,
                                       "status": 200 if found else 404}})
                else:
                    docs[doc_id] = source
                    items.append({op: {"_index": index, "_id": doc_id, "status": 201,
                                       "result": "created"}})
            errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
            return 200, {"took": 1, "errors": errors, "items": items}

    return RecordingNode


def matches_path(request: RecordedRequest, pattern: str) -> bool:
    """``"POST /*/_search"``-style matching of a recorded request (``*`` = one segment)."""
    method, path = pattern.split(" ", 1)
    regex = "^" + re.escape(path).replace(r"\*", "[^/]+") + "$"
    return request.method == method and re.match(regex, request.path) is not None
