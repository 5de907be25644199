"""Article identity: canonical URLs and the stable ``article_id`` derived from them."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Parameters that track the reader, not the document.
_TRACKING_EXACT = {
    "fbclid", "gclid", "dclid", "gclsrc", "msclkid", "yclid", "mc_cid", "mc_eid", "igshid",
    "_ga", "_gl", "ref_src", "ref_url", "cmpid", "ncid", "ocid", "smid", "smtyp", "spm",
    "at_medium", "at_campaign", "taid", "mkt_tok", "wt.mc_id", "s_cid", "xtor",
    "__twitter_impression",
}
_TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_", "oly_", "vero_")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered in _TRACKING_EXACT or lowered.startswith(_TRACKING_PREFIXES)


def canonical_url(url: str) -> str:
    """Normalise a URL so that the same article linked in different ways has one identity.

    Lower-cases scheme and host, drops default ports, the fragment and tracking parameters,
    sorts the remaining query parameters, and removes an empty path's trailing slash.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        return url.strip()
    port = parts.port
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    if ":" in host and not host.startswith("["):  # IPv6 literal
        netloc = f"[{host}]" if port in (None, _DEFAULT_PORTS.get(scheme)) else f"[{host}]:{port}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not _is_tracking(k)]
    query.sort()
    path = re.sub(r"/{2,}", "/", parts.path) or "/"
    return urlunsplit((scheme, netloc, path, urlencode(query, doseq=True), ""))


def article_id_for(url: str | None, guid: str | None = None) -> str:
    """Stable id: from the canonical URL, else from the feed entry's GUID."""
    if url:
        key = "url:" + canonical_url(url)
    elif guid:
        key = "guid:" + guid.strip()
    else:
        raise ValueError("an article needs a link or a guid")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def content_hash(title: str | None, text: str) -> str:
    """Hash of what readers see; whitespace differences are not edits."""
    normal = " ".join(((title or "") + "\n" + text).split()).lower()
    return hashlib.sha256(normal.encode("utf-8")).hexdigest()[:32]


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
