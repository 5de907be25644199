"""TEST-ONLY transport node that lets the Elasticsearch 9 client talk to osmem-server.

The ES 9 client sends ``application/vnd.elasticsearch+json; compatible-with=9`` as Accept and
Content-Type, which osmem (an OpenSearch fake) rejects, and it refuses any 2xx response that
lacks ``X-Elastic-Product: Elasticsearch``. This node rewrites the media types to plain
``application/json`` / ``application/x-ndjson`` and stamps the product header on responses.
It also renames the one body key whose spelling differs between the two products: the
highlighter's ``max_analyzed_offset`` (Elasticsearch) is ``max_analyzer_offset`` in OpenSearch.
Never use it against a real cluster: it hides exactly the checks a real cluster must pass.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from elastic_transport import HttpHeaders, Urllib3HttpNode

_VND = re.compile(r"application/vnd\.elasticsearch\+([a-z-]+)(?:\s*;\s*compatible-with=\d+)?",
                  re.IGNORECASE)


def _plain(value: str) -> str:
    return _VND.sub(lambda m: f"application/{m.group(1)}", value)


def _opensearch_body(target: str, body: bytes | None) -> bytes | None:
    """Rename Elasticsearch's highlight ``max_analyzed_offset`` to OpenSearch's spelling."""
    if not body or "/_search" not in target or b"max_analyzed_offset" not in body:
        return body
    request = json.loads(body)
    highlight = request.get("highlight") or {}
    if "max_analyzed_offset" in highlight:
        highlight["max_analyzer_offset"] = highlight.pop("max_analyzed_offset")
    return json.dumps(request).encode()


class OsmemCompatNode(Urllib3HttpNode):
    """Urllib3 node with ES-9 compatibility headers translated for osmem-server."""

    def perform_request(self, method: str, target: str, body: bytes | None = None,
                        headers: HttpHeaders | None = None, **kwargs: Any) -> Any:
        body = _opensearch_body(target, body)
        rewritten = HttpHeaders()
        for key, value in (headers or {}).items():
            rewritten[key] = _plain(value) if key.lower() in ("accept", "content-type") else value
        for key in ("accept", "content-type"):  # defaults set on the node itself
            if key in self._headers and key not in rewritten:
                rewritten[key] = _plain(self._headers[key])
        response = super().perform_request(method, target, body=body, headers=rewritten,
                                           **kwargs)
        response_headers = HttpHeaders(dict(response.meta.headers.items()))
        response_headers["X-Elastic-Product"] = "Elasticsearch"
        meta = dataclasses.replace(response.meta, headers=response_headers)
        return response._replace(meta=meta)  # NodeApiResponse is a NamedTuple
