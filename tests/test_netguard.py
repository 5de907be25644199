"""Address guard: classification, policy, URL vetting and the connect-time backend."""

from __future__ import annotations

import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta

import httpcore
import httpx
import pytest

from pipeline.netguard import (
    AddressPolicy,
    BlockedAddressError,
    GuardedBackend,
    InvalidURLError,
    classify_address,
    guarded_client,
    guarded_transport,
    is_guarded,
    vet_url,
)


class RecordingBackend(httpcore.NetworkBackend):
    """Stands in for the socket layer: records where it was asked to connect."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.connects.append((host, port))
        raise httpcore.ConnectError("recording backend does not connect")


STRICT = AddressPolicy.create()


@pytest.mark.parametrize(("address", "category"), [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("fd12:3456::1", "private"),  # ULA fc00::/7
    ("169.254.169.254", "cloud-metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("100.64.0.1", "shared (CGNAT)"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("192.0.2.10", "private"),  # documentation range: not routable
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "cloud-metadata"),
    ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
    ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
    ("fd00:ec2::254", "cloud-metadata"),
])
def test_non_public_addresses_are_classified(address, category):
    assert classify_address(_ip(address)) == category
    assert STRICT.refusal(address) == category


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_pass(address):
    assert classify_address(_ip(address)) is None
    assert STRICT.refusal(address) is None


def test_allow_private_opens_internal_ranges_but_not_metadata_or_multicast():
    policy = AddressPolicy.create(allow_private=True)
    for address in ("127.0.0.1", "10.0.0.1", "192.168.0.5", "fd12::1", "100.64.0.1"):
        assert policy.refusal(address) is None, address
    for address in ("169.254.169.254", "169.254.1.1", "fe80::1", "224.0.0.1", "0.0.0.0",
                    "240.0.0.1", "fd00:ec2::254"):
        assert policy.refusal(address) is not None, address


def test_allowed_networks_open_only_what_they_list():
    policy = AddressPolicy.create(allowed_networks=["127.0.0.0/8"])
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("::ffff:127.0.0.1") is None
    assert policy.refusal("10.0.0.1") == "private"
    assert policy.refusal("::1") == "loopback"


def test_unparsable_address_is_refused():
    assert STRICT.refusal("not-an-ip") == "unparsable"


@pytest.mark.parametrize("url", ["ftp://example.com/feed", "file:///etc/passwd",
                                 "gopher://example.com/", "javascript:alert(1)", "http://",
                                 "example.com/feed", "http://[::1/"])
def test_vet_url_rejects_non_http_and_hostless_urls(url):
    with pytest.raises(InvalidURLError):
        vet_url(url, STRICT)


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://[::1]:8080/x",
                                 "http://169.254.169.254/latest/meta-data/",
                                 "https://10.0.0.1/", "http://[::ffff:10.0.0.1]/"])
def test_vet_url_blocks_forbidden_ip_literals_before_any_connection(url):
    with pytest.raises(BlockedAddressError):
        vet_url(url, STRICT)


def test_vet_url_accepts_public_urls_and_leaves_names_to_the_backend():
    assert vet_url("https://Example.com/feed.xml", STRICT).host == "example.com"
    assert vet_url("http://localhost/", STRICT).host == "localhost"  # checked once resolved


def test_backend_checks_resolved_addresses_not_names():
    inner = RecordingBackend()
    backend = GuardedBackend(STRICT, inner, resolver=lambda host, port: ["10.0.0.7"])
    with pytest.raises(BlockedAddressError) as blocked:
        backend.connect_tcp("news.example.com", 443)
    assert blocked.value.address == "10.0.0.7"
    assert blocked.value.host == "news.example.com"
    assert inner.connects == []  # refused before any connection attempt


def test_backend_refuses_when_any_resolved_address_is_forbidden():
    inner = RecordingBackend()
    backend = GuardedBackend(STRICT, inner,
                             resolver=lambda host, port: ["93.184.216.34", "127.0.0.1"])
    with pytest.raises(BlockedAddressError):
        backend.connect_tcp("rebind.example.com", 80)
    assert inner.connects == []


def test_backend_connects_to_the_vetted_ip_and_tries_each_in_turn():
    inner = RecordingBackend()
    backend = GuardedBackend(STRICT, inner,
                             resolver=lambda host, port: ["93.184.216.34", "2606:4700::1"])
    with pytest.raises(httpcore.ConnectError):
        backend.connect_tcp("example.com", 443)
    assert inner.connects == [("93.184.216.34", 443), ("2606:4700::1", 443)]


def test_backend_checks_literals_and_system_resolution():
    backend = GuardedBackend(STRICT, RecordingBackend())
    for host in ("127.0.0.1", "::1", "localhost", "2130706433"):  # last: decimal 127.0.0.1
        with pytest.raises(BlockedAddressError):
            backend.connect_tcp(host, 80)


def test_backend_refuses_unix_sockets():
    with pytest.raises(BlockedAddressError):
        GuardedBackend(STRICT).connect_unix_socket("/var/run/docker.sock")


def test_guarded_transport_installs_the_backend_and_refuses_proxies():
    transport = guarded_transport(STRICT)
    assert is_guarded(transport)
    assert not is_guarded(httpx.HTTPTransport())
    with pytest.raises(ValueError):
        guarded_transport(STRICT, proxy="http://proxy.example:3128")


def test_guarded_client_blocks_loopback_over_real_http(http_server):
    http_server.route("/", body="secret")
    with guarded_client(STRICT) as client, pytest.raises(BlockedAddressError):
        client.get(http_server.url("/"))
    assert http_server.requests() == []


def test_guarded_client_reaches_an_allowed_network(http_server):
    http_server.route("/", body="hello")
    policy = AddressPolicy.create(allowed_networks=["127.0.0.0/8"])
    with guarded_client(policy) as client:
        assert client.get(http_server.url("/")).text == "hello"


def test_name_is_kept_for_host_header_while_connecting_to_the_vetted_ip(http_server):
    """What TLS relies on: httpcore gives the URL's name (not the IP) to start_tls."""
    http_server.route("/", body="hi")
    policy = AddressPolicy.create(allowed_networks=["127.0.0.0/8"])
    transport = guarded_transport(policy, resolver=lambda host, port: ["127.0.0.1"])
    with httpx.Client(transport=transport) as client:
        response = client.get(f"http://feeds.example.test:{http_server.port}/")
    assert response.text == "hi"
    assert http_server.requests()[0].headers["host"] == f"feeds.example.test:{http_server.port}"


def _ip(address: str):
    import ipaddress

    return ipaddress.ip_address(address.split("%")[0])


def test_tls_uses_the_hostname_for_sni_and_certificate_while_connecting_to_the_ip(tmp_path):
    """The vetted IP is what we connect to; SNI and certificate checks still see the name."""
    cert_file, key_file = _self_signed_cert(tmp_path, "feeds.example.test")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    seen_sni: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:
        conn, _ = listener.accept()
        with server_context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(cert_file))
    policy = AddressPolicy.create(allowed_networks=["127.0.0.0/8"])
    transport = guarded_transport(policy, verify=client_context,
                                  resolver=lambda host, port: ["127.0.0.1"])
    try:
        with httpx.Client(transport=transport, timeout=5) as client:
            response = client.get(f"https://feeds.example.test:{port}/")
    finally:
        thread.join(timeout=5)
        listener.close()
    assert response.text == "ok"
    assert seen_sni == ["feeds.example.test"]


def _self_signed_cert(directory, hostname: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file
