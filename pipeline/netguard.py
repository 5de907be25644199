"""Address safety for outgoing HTTP: never let a feed or article URL reach internal services.

Feed URLs, redirect targets and article links come from the outside world, so a fetcher is a
classic SSRF vector (cloud metadata at 169.254.169.254, admin panels on 127.0.0.1, ...).
Checking the URL's host before the request is not enough: a hostname can resolve to a public
address when checked and to a private one when connected (DNS rebinding), and redirects lead
anywhere. So the check lives where the socket is opened: :class:`GuardedBackend` is an httpcore
network backend that resolves the host itself, vets *every* resolved address and then connects
to the vetted IP literal. TLS is unaffected: httpcore passes ``server_hostname=origin.host``
(the URL's hostname, not the IP) to ``start_tls``, so SNI and certificate checks still use the
name (httpcore/_sync/connection.py, ``_connect``).

Use :func:`guarded_client` (or :func:`guarded_transport`) for any request to a URL that did not
come from the operator's own configuration.
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

ALLOWED_SCHEMES = frozenset({"http", "https"})

_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")  # CGNAT, RFC 6598
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052, embeds an IPv4 address
# Cloud metadata services that sit inside ranges allow_private would otherwise open.
_METADATA_ADDRESSES = frozenset({
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6 IMDS
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
})
# Never reachable on purpose, even when private networks are allowed.
_ALWAYS_BLOCKED = frozenset({"unspecified", "multicast", "broadcast", "reserved", "link-local",
                             "cloud-metadata"})


class InvalidURLError(ValueError):
    """A URL we will not even try: not http(s), no host, unparsable."""


class BlockedAddressError(Exception):
    """Refused to connect: the host is, or resolves to, an address the policy forbids."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        where = host if host == address else f"{host} ({address})"
        super().__init__(f"refusing to connect to {where}: {reason} address")


def _parse_ip(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form will really reach (mapped, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def classify_address(ip: IPAddress) -> str | None:
    """Why an address is not public internet (e.g. ``"loopback"``), or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            category = classify_address(embedded)
            # Mapped and NAT64 forms are exactly their IPv4 address; 6to4 must pass both checks.
            if category is not None or ip.sixtofour is None:
                return category
    if ip in _METADATA_ADDRESSES:
        return "cloud-metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip in _SHARED_ADDRESS_SPACE:
            return "shared (CGNAT)"
        if ip == ipaddress.IPv4Address("255.255.255.255"):
            return "broadcast"
    if ip.is_reserved:
        return "reserved"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-global"
    return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses outgoing requests may reach.

    Public addresses always pass. ``allow_private`` opens loopback, RFC 1918, ULA, CGNAT and
    other non-global unicast ranges (an intranet deployment, a local demo site), but never
    unspecified, multicast, broadcast, reserved, link-local or cloud-metadata addresses: no feed
    lives there and they are the usual SSRF prizes. ``allowed_networks`` is an explicit allow
    list that beats every category (tests use it to open 127.0.0.0/8 and nothing else).
    """

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def create(cls, *, allow_private: bool = False,
               allowed_networks: Iterable[str | IPNetwork] = ()) -> AddressPolicy:
        networks = tuple(ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n
                         for n in allowed_networks)
        return cls(allow_private=allow_private, allowed_networks=networks)

    def _explicitly_allowed(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c.version == net.version and c in net
                   for c in candidates for net in self.allowed_networks)

    def refusal(self, address: str | IPAddress) -> str | None:
        """The reason ``address`` may not be reached, or None if it may."""
        ip = _parse_ip(address) if isinstance(address, str) else address
        if ip is None:
            return "unparsable"
        if self._explicitly_allowed(ip):
            return None
        category = classify_address(ip)
        if category is None:
            return None
        if self.allow_private and category not in _ALWAYS_BLOCKED:
            return None
        return category

    def check(self, host: str, address: str) -> None:
        """Raise BlockedAddressError if ``address`` (what ``host`` resolved to) is refused."""
        reason = self.refusal(address)
        if reason is not None:
            raise BlockedAddressError(host, address, reason)


def vet_url(url: str | httpx.URL, policy: AddressPolicy) -> httpx.URL:
    """Parse and pre-check a URL before any network activity.

    Rejects non-http(s) schemes and missing hosts (InvalidURLError) and hosts that are IP
    literals the policy forbids (BlockedAddressError). Names are checked at connect time by
    :class:`GuardedBackend`, on the address actually used.
    """
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise InvalidURLError(f"invalid URL {str(url)[:200]!r}: {exc}") from exc
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise InvalidURLError(f"unsupported scheme {parsed.scheme!r} (only http and https)")
    if not parsed.host:
        raise InvalidURLError(f"URL has no host: {str(url)[:200]!r}")
    ip = _parse_ip(parsed.host)
    if ip is not None:
        policy.check(parsed.host, str(ip))
    return parsed


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for TCP, in getaddrinfo's preference order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
    addresses: list[str] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class GuardedBackend(httpcore.NetworkBackend):
    """An httpcore backend that only ever connects to vetted IP addresses.

    ``connect_tcp`` resolves the host, refuses the connection if ANY resolved address is
    forbidden (a name mixing public and private answers is an attack, not a feed), then
    connects to the vetted addresses in order through ``inner``. Because the inner backend
    receives an IP literal, no second DNS lookup can swap the target.
    """

    def __init__(self, policy: AddressPolicy, inner: httpcore.NetworkBackend | None = None,
                 resolver: Resolver | None = None) -> None:
        self.policy = policy
        self._inner = inner if inner is not None else httpcore.SyncBackend()
        self._resolve = resolver or system_resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        literal = _parse_ip(host)
        addresses = [host] if literal is not None else self._resolve(host, port)
        if not addresses:
            raise httpcore.ConnectError(f"{host!r} resolved to no address")
        for address in addresses:
            self.policy.check(host, address)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(address, port, timeout=timeout,
                                               local_address=local_address,
                                               socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise BlockedAddressError(path, path, "unix socket")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def guarded_transport(
    policy: AddressPolicy,
    *,
    inner_backend: httpcore.NetworkBackend | None = None,
    resolver: Resolver | None = None,
    **transport_kwargs: typing.Any,
) -> httpx.HTTPTransport:
    """An httpx transport whose every connection goes through :class:`GuardedBackend`.

    httpx 0.28 has no public hook for the network backend, so the backend of the transport's
    httpcore ConnectionPool is replaced (connections read it when they are created). If httpx
    ever changes that layout this fails loudly instead of silently running unguarded. Proxies
    are refused: the guard would only vet the proxy's address.
    """
    if transport_kwargs.get("proxy") is not None or transport_kwargs.get("uds") is not None:
        raise ValueError("a guarded transport cannot use a proxy or a unix socket")
    transport_kwargs.setdefault("trust_env", False)
    transport = httpx.HTTPTransport(**transport_kwargs)
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.ConnectionPool) or not hasattr(pool, "_network_backend"):
        raise RuntimeError("cannot install the address guard: unexpected httpx/httpcore layout")
    pool._network_backend = GuardedBackend(policy, inner_backend, resolver)
    return transport


def is_guarded(transport: httpx.BaseTransport) -> bool:
    """True if ``transport`` connects through a GuardedBackend (for tests and assertions)."""
    pool = getattr(transport, "_pool", None)
    return isinstance(getattr(pool, "_network_backend", None), GuardedBackend)


def guarded_client(policy: AddressPolicy, **client_kwargs: typing.Any) -> httpx.Client:
    """An httpx.Client for untrusted URLs: guarded transport, no env proxies, no redirects.

    Redirects stay off because httpx would follow them without re-checking the scheme; the
    guard still vets each hop's address, but callers should follow redirects themselves (as
    :class:`pipeline.fetcher.Fetcher` does).
    """
    client_kwargs.setdefault("follow_redirects", False)
    client_kwargs["trust_env"] = False
    return httpx.Client(transport=guarded_transport(policy), **client_kwargs)
