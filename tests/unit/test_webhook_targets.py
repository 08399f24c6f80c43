"""Where webhooks may connect: the address check, and the connection that goes to the
very address that was checked (no second lookup, TLS still verified for the name)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import urllib3.util.connection
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from registry_service.config import Settings
from registry_service.errors import WebhookTargetRefused, status_for
from registry_service.integrations import egress
from registry_service.integrations.webhooks import check_target, redact_url

LOOPBACK = egress.parse_networks(["127.0.0.0/8"])
PUBLIC = "93.184.216.34"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("172.31.255.254", "a private address"),
        ("192.168.1.1", "a private address"),
        ("100.64.0.1", "a shared (carrier-grade NAT) address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("fd12:3456::1", "a unique-local address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("168.63.129.16", "a cloud metadata address"),
        ("::ffff:169.254.169.254", "a cloud metadata address"),
        ("::ffff:127.0.0.1", "the IPv4-mapped form of a loopback address"),
        ("::ffff:10.1.2.3", "the IPv4-mapped form of a private address"),
        ("::7f00:1", "the IPv4-compatible form of a loopback address"),
        ("::808:808", "an IPv4-compatible address (deprecated, never routed)"),
        ("64:ff9b::7f00:1", "the NAT64 form of a loopback address"),
        ("64:ff9b::a9fe:a9fe", "a cloud metadata address"),
        ("2002:c0a8:101::1", "the 6to4 form of a private address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("fec0::1", "a site-local address"),
        ("192.0.2.10", "a private address"),  # documentation range, never routed
    ],
)
def test_internal_addresses_and_their_ipv6_spellings_are_refused(address, reason):
    assert egress.refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_public_addresses_and_translations_of_them_pass(address):
    assert egress.refusal(ipaddress.ip_address(address)) is None


def test_the_allow_list_lets_internal_receivers_in_but_never_metadata():
    allowed = egress.parse_networks(["127.0.0.0/8", "169.254.0.0/16", "fd00::/8"])
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "169.254.10.1", "fd12::1"):
        assert egress.refusal(ipaddress.ip_address(address), allowed) is None
    for address in ("169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"):
        assert egress.refusal(ipaddress.ip_address(address), allowed) == (
            "a cloud metadata address"
        )
    assert egress.refusal(ipaddress.ip_address("10.0.0.1"), allowed) == "a private address"


def test_the_allow_list_setting_is_read_as_networks():
    env = {"REGISTRY_WEBHOOK_ALLOW_NETWORKS": "10.20.0.0/16, fd12:3456::/48 127.0.0.1"}
    settings = Settings.from_env(env)
    assert settings.webhook_allow_networks == ("10.20.0.0/16", "fd12:3456::/48", "127.0.0.1/32")
    assert Settings.from_env({}).webhook_allow_networks == ()
    with pytest.raises(ValueError, match="REGISTRY_WEBHOOK_ALLOW_NETWORKS"):
        Settings.from_env({"REGISTRY_WEBHOOK_ALLOW_NETWORKS": "10.0.0.0/8,intranet"})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://10.0.0.5/hook",
        "http://172.16.3.4/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:8080/hook",
        "http://localhost:8080/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one number, which resolvers accept
    ],
)
def test_a_refused_target_is_a_problem_with_a_stable_code(url):
    with pytest.raises(WebhookTargetRefused) as info:
        check_target(url, ())
    error = info.value
    assert (error.code, status_for(error)) == ("webhook-target-refused", 422)
    assert error.errors[0]["field"] == "url"
    assert "REGISTRY_WEBHOOK_ALLOW_NETWORKS" in error.detail


def test_a_name_that_does_not_resolve_yet_is_left_to_the_deliveries():
    assert check_target("https://hooks.example.invalid/x", ()) == "https://hooks.example.invalid/x"


def test_urls_are_redacted_to_scheme_host_and_a_fingerprint():
    url = "https://hooks.slack.com/services/T000/B000/XXXXsecret?token=abc"
    shown = redact_url(url)
    assert shown.startswith("https://hooks.slack.com/…#sha256:") and len(shown.split(":")[-1]) == 8
    assert "services" not in shown and "secret" not in shown and "token" not in shown
    assert redact_url(url) == shown and redact_url(url + "x") != shown
    assert redact_url("http://[::1]:8080/a/b").startswith("http://[::1]:8080/…#sha256:")


def test_targets_keep_the_name_for_the_host_header():
    target = egress.Target.parse("https://Bücher.example:8443/in/ä?q=1")
    assert (target.host, target.port) == ("xn--bcher-kva.example", 8443)
    assert target.host_header == "xn--bcher-kva.example:8443"
    assert target.path == "/in/%C3%A4?q=1"
    assert egress.Target.parse("http://[::1]/").host_header == "[::1]"
    assert egress.Target.parse("http://h.example:80").host_header == "h.example"
    with pytest.raises(ValueError, match="port"):
        egress.Target.parse("http://h.example:99999/")


# -- the connection


class Receiver:
    """A local HTTP(S) endpoint that records what reached it."""

    def __init__(self, status: int = 204, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {"path": self.path, "host": self.headers["Host"], "body": body}
                )
                self.send_response(status)
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.write(b"answer!")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def dns(monkeypatch):
    """Names of our own: ``answers[name]`` lists what each lookup answers (the last one
    repeats), e.g. ``[["93.184.216.34"], ["127.0.0.1"]]`` for a rebinding name."""
    answers: dict[str, list[list[str]]] = {}
    lookups: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        found = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in found
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers, lookups


@pytest.fixture
def connects(monkeypatch):
    """Every address urllib3 connects to; those in ``routes`` reach the given local
    port instead (a stand-in for the network carrying a public address to a receiver)."""
    made: list[tuple[str, int]] = []
    routes: dict[str, int] = {}
    real = urllib3.util.connection.create_connection

    def create_connection(address, *args, **kwargs):
        made.append(address)
        if address[0] in routes:
            return real(("127.0.0.1", routes[address[0]]), *args, **kwargs)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    return made, routes


def test_a_rebinding_name_is_connected_to_at_the_address_that_was_checked(dns, connects, receiver):
    """The name answers a public address to the check and loopback afterwards: the
    connection goes to the public address, with the name in the Host header."""
    answers, lookups = dns
    made, routes = connects
    answers["hooks.rebind.test"] = [[PUBLIC], ["127.0.0.1"]]
    routes[PUBLIC] = receiver.port
    answer = egress.post(
        f"http://hooks.rebind.test:{receiver.port}/hook?token=t", b"{}", {}, timeout=5
    )
    assert (answer.status, answer.error) == (204, None)
    assert lookups == ["hooks.rebind.test"]  # resolved once
    assert made == [(PUBLIC, receiver.port)]  # connected to what was checked
    (got,) = receiver.requests
    assert got["host"] == f"hooks.rebind.test:{receiver.port}"
    assert got["path"] == "/hook?token=t"

    # Had anything resolved the name again, it would have got loopback: refused whole.
    with pytest.raises(WebhookTargetRefused) as info:
        egress.post(f"http://hooks.rebind.test:{receiver.port}/hook", b"{}", {})
    assert "hooks.rebind.test resolves to 127.0.0.1, a loopback address" in info.value.detail
    assert made == [(PUBLIC, receiver.port)]  # and nothing was connected to


def test_a_refused_target_is_never_connected_to(dns, connects, receiver):
    answers, _ = dns
    made, _ = connects
    answers["mixed.test"] = [[PUBLIC, "10.0.0.7"]]  # one private answer refuses the name
    for url in (
        f"http://localhost:{receiver.port}/hook",
        f"http://[::ffff:127.0.0.1]:{receiver.port}/hook",
        f"http://mixed.test:{receiver.port}/hook",
    ):
        with pytest.raises(WebhookTargetRefused):
            egress.post(url, b"{}", {})
    assert made == [] and receiver.requests == []


def test_allowed_receivers_are_reached_and_redirects_are_not_followed(receiver):
    answer = egress.post(f"http://127.0.0.1:{receiver.port}/a", b"{}", {}, allowed=LOOPBACK)
    assert (answer.status, answer.error) == (204, None)
    moved = Receiver(status=302)
    try:
        answer = egress.post(f"http://localhost:{moved.port}/b", b"{}", {}, allowed=LOOPBACK)
        assert (answer.status, answer.head) == (302, b"answer!")
        assert len(moved.requests) == 1  # the Location was not visited
    finally:
        moved.close()


def test_errors_name_the_host_never_the_path(dns):
    answers, _ = dns
    answers["closed.test"] = [["127.0.0.1"]]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    answer = egress.post(f"http://closed.test:{port}/s3cret?token=t", b"{}", {}, allowed=LOOPBACK)
    assert answer.status is None
    assert answer.error.startswith(f"ConnectionError: closed.test (127.0.0.1) port {port}: ")
    assert "s3cret" not in answer.error and "token" not in answer.error
    gone = egress.post("http://nowhere.invalid/s3cret", b"{}", {})
    assert (
        gone.error.startswith("NameResolutionError: nowhere.invalid") and "s3cret" not in gone.error
    )


def test_a_refused_connection_moves_on_to_the_next_checked_address(dns, connects, receiver):
    answers, _ = dns
    made, _ = connects
    answers["two.test"] = [["127.0.0.2", "127.0.0.1"]]  # nothing listens on 127.0.0.2
    answer = egress.post(f"http://two.test:{receiver.port}/x", b"{}", {}, allowed=LOOPBACK)
    assert answer.status == 204
    assert [host for host, _ in made] == ["127.0.0.2", "127.0.0.1"]


# -- TLS: SNI and the certificate are the name's, the connection is the address's


def _certificates(tmp_path, name: str):
    """A CA, and a server certificate for ``name`` it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(ca_file), str(cert_file), str(key_file)


def test_tls_is_verified_for_the_name_while_connecting_to_the_checked_address(
    tmp_path, dns, connects
):
    answers, lookups = dns
    made, _ = connects
    ca_file, cert_file, key_file = _certificates(tmp_path, "hooks.pinned.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = Receiver(tls=context)
    try:
        answers["hooks.pinned.test"] = [["127.0.0.1"], ["10.9.9.9"]]  # a 2nd lookup: refused
        answers["other.pinned.test"] = [["127.0.0.1"]]
        answer = egress.post(
            f"https://hooks.pinned.test:{server.port}/hook",
            b"{}",
            {},
            allowed=LOOPBACK,
            ca_certs=ca_file,
        )
        assert (answer.status, answer.error) == (204, None)
        assert names == ["hooks.pinned.test"]  # SNI carries the name
        assert made == [("127.0.0.1", server.port)]
        assert lookups == ["hooks.pinned.test"]
        assert server.requests[0]["host"] == f"hooks.pinned.test:{server.port}"

        # Same address, another name: the certificate does not match, nothing is sent.
        wrong = egress.post(
            f"https://other.pinned.test:{server.port}/hook",
            b"{}",
            {},
            allowed=LOOPBACK,
            ca_certs=ca_file,
        )
        assert wrong.status is None and wrong.error.startswith("SSLError: other.pinned.test")
        assert len(server.requests) == 1
    finally:
        server.close()
