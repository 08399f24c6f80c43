"""Webhook egress: its one job is that a delivery reaches only an address that was checked.

A webhook URL is chosen by a user, so it must not become a way into the service's own
network: loopback, private and link-local ranges, unique-local IPv6, cloud metadata
services, and the IPv4-mapped, IPv4-compatible, NAT64 and 6to4 spellings of any of them
are refused (``refusal``). Checking a name and then handing it to an HTTP client is not
enough: the client resolves the name again when it connects, and a name can answer a
public address to the check and a loopback one to the connection (DNS rebinding).

So ``post`` resolves the host once, checks every address it got, and connects to a
checked address itself. It opens a urllib3 connection pool whose host *is* that IP
address, and keeps the name where the name belongs:

- the ``Host`` header carries the URL's host (and port), as any client would send it;
- for https, ``server_hostname`` is the URL's host, so TLS sends it as SNI and the
  certificate is verified against it by the ``ssl`` module (``check_hostname``), not
  against the IP address;
- the address reaches ``socket.connect`` as a numeric literal, which nothing resolves
  again.

urllib3's pools take these as constructor arguments, so nothing private of requests or
urllib3 is overridden, and the pool lives for one delivery. Redirects are never
followed (a 3xx is an answer like any other), urllib3 never retries on its own, and no
proxy from the environment is used (a proxy would resolve the name again). When the name
has several addresses they are tried in the resolver's order, and only a refused
connection or a connect timeout moves on to the next one, so nothing is sent twice.

Addresses inside ``REGISTRY_WEBHOOK_ALLOW_NETWORKS`` are allowed for internal receivers;
the cloud metadata addresses stay refused even then.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import certifi
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from registry_service.errors import WebhookTargetRefused

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata and platform services: refused even inside an allowed network.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean, OpenStack...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer (a public address)
        "192.0.0.192",  # Oracle Cloud (classic)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
    )
)
SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598
UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated, RFC 4291
HEAD_BYTES = 200
# requests' own order: an operator's CA bundle, else certifi's.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (``10.1.0.0/16``, ``fd12::/48``; a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def embedded_ipv4(address: Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 one stands for, with the name of the form, if any."""
    if address.version == 4:
        return None
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address in NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are not IPv4
        return "IPv4-compatible", ipaddress.IPv4Address(int(address))
    return None


def _kind(address: Address) -> str | None:
    """What makes an address internal ("a loopback address"), or None for a public one."""
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address in SHARED:
        return "a shared (carrier-grade NAT) address"
    if address in UNIQUE_LOCAL:
        return "a unique-local address"
    if address.version == 6 and address.is_site_local:
        return "a site-local address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a non-global address"
    return None


def refusal(address: Address, allowed: Iterable[Network] = ()) -> str | None:
    """Why webhooks may not call ``address`` (e.g. "a loopback address"), or None.

    An address embedding an IPv4 one is judged as that IPv4 address; an allowed network
    lets in what it contains (either form), except the metadata addresses."""
    embedded = embedded_ipv4(address)
    forms = [address] if embedded is None else [address, embedded[1]]
    if any(a in METADATA for a in forms):
        return "a cloud metadata address"
    if any(a in network for a in forms for network in allowed):
        return None
    if embedded is None:
        return _kind(address)
    form, ipv4 = embedded
    kind = _kind(ipv4)
    if kind:
        return f"the {form} form of {kind}"
    if form == "IPv4-compatible":
        return "an IPv4-compatible address (deprecated, never routed)"
    return None


@dataclass(frozen=True)
class Target:
    """Where a URL points: what the connection needs, and what the request line carries."""

    scheme: str
    host: str  # an ASCII name (IDNA) or an IP address without brackets
    port: int
    path: str  # path and query
    host_header: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """Raises ValueError, with a message for the caller, when the URL is unusable."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an absolute http or https URL")
        try:
            explicit = parts.port
        except ValueError as exc:
            raise ValueError("the port must be a number from 0 to 65535") from exc
        try:
            host = parts.hostname.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError("the host is not a valid name") from exc
        default = 443 if parts.scheme == "https" else 80
        port = default if explicit is None else explicit
        shown = f"[{host}]" if ":" in host else host
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(
            scheme=parts.scheme,
            host=host,
            port=port,
            # As requests sends it: what is not already escaped is escaped.
            path=quote(path, safe="!#$%&'()*+,/:;=?@[]~"),
            host_header=shown if port == default else f"{shown}:{port}",
        )


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[Address]:
    """Every address of ``host``, in the resolver's order (an IP address is itself).
    Raises OSError (socket.gaierror) when the name does not resolve."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    found: list[Address] = []
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found


def checked(target: Target, allowed: Iterable[Network] = ()) -> list[Address]:
    """The target's addresses, resolved once; refused whole if any one is refused."""
    addresses = resolve(target.host, target.port)
    for address in addresses:
        reason = refusal(address, allowed)
        if reason:
            named = (
                target.host
                if _literal(target.host) is not None
                else f"{target.host} resolves to {address}"
            )
            raise WebhookTargetRefused(
                f"{named}, {reason}: webhooks call only public addresses, and "
                "internal ones listed in REGISTRY_WEBHOOK_ALLOW_NETWORKS"
            )
    return addresses


@dataclass(frozen=True)
class Answer:
    """A status code (with the start of the body if it is not 2xx), or why none came.
    Errors name the host and address, never the URL's path or query."""

    status: int | None
    head: bytes = b""
    error: str | None = None


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    allowed: Iterable[Network] = (),
    timeout: float = 10.0,
    ca_certs: str | None = None,
) -> Answer:
    """POST ``body`` to ``url`` at an address checked here (see the module's docstring).
    Raises WebhookTargetRefused, and nothing is sent, when the host is refused."""
    target = Target.parse(url)
    try:
        addresses = checked(target, allowed)
    except OSError as exc:
        return Answer(None, error=f"NameResolutionError: {target.host}: {exc.strerror or exc}")
    limits = urllib3.Timeout(connect=min(5.0, timeout), read=timeout)
    answer = Answer(None, error="no address to connect to")
    for address in addresses:
        answer, connected = _post_to(target, address, body, headers, limits, ca_certs)
        if connected:
            return answer
    return answer


def _pool(
    target: Target, address: Address, limits: urllib3.Timeout, ca_certs: str | None
) -> urllib3.HTTPConnectionPool:
    common: dict = {"port": target.port, "timeout": limits, "retries": False, "maxsize": 1}
    if target.scheme == "http":
        return urllib3.HTTPConnectionPool(str(address), **common)
    bundle = ca_certs or next(
        (os.environ[v] for v in CA_BUNDLE_VARIABLES if os.environ.get(v)), certifi.where()
    )
    return urllib3.HTTPSConnectionPool(
        str(address),
        **common,
        cert_reqs="CERT_REQUIRED",
        ca_certs=bundle,
        server_hostname=target.host,  # SNI, and the name the certificate must carry
    )


def _post_to(
    target: Target,
    address: Address,
    body: bytes,
    headers: Mapping[str, str],
    limits: urllib3.Timeout,
    ca_certs: str | None,
) -> tuple[Answer, bool]:
    """One attempt at one address, and whether a connection was made (if not, nothing
    was sent and the next address may be tried)."""
    named = target.host if _literal(target.host) is not None else f"{target.host} ({address})"
    where = f"{named} port {target.port}"
    with _pool(target, address, limits, ca_certs) as pool:
        try:
            response = pool.urlopen(
                "POST",
                target.path,
                body=body,
                headers={**headers, "Host": target.host_header},
                redirect=False,
                retries=False,
                assert_same_host=False,
                preload_content=False,
            )
        except (HTTPError, OSError) as exc:
            return _failure(exc, where, limits)
        try:
            head = b""
            if not 200 <= response.status < 300:
                head = response.read(HEAD_BYTES, decode_content=True) or b""
            return Answer(response.status, head[:HEAD_BYTES]), True
        except (HTTPError, OSError) as exc:
            return Answer(response.status, error=f"{type(exc).__name__}: {str(exc)[:300]}"), True
        finally:
            response.release_conn()


def _failure(exc: Exception, where: str, limits: urllib3.Timeout) -> tuple[Answer, bool]:
    """A request that got no answer, and whether it got as far as a connection."""
    if isinstance(exc, NewConnectionError):  # first: it subclasses ConnectTimeoutError
        return Answer(None, error=f"ConnectionError: {where}: {exc.__cause__ or exc}"), False
    if isinstance(exc, ConnectTimeoutError):
        error = f"ConnectTimeout: {where}: no connection in {limits.connect_timeout} s"
        return Answer(None, error=error), False
    if isinstance(exc, ReadTimeoutError):
        return Answer(
            None, error=f"ReadTimeout: {where}: no answer in {limits.read_timeout} s"
        ), True
    name = type(exc).__name__
    if isinstance(exc, ProtocolError):
        name = "ConnectionError"
    elif isinstance(exc, SSLError):
        name = "SSLError"
    return Answer(None, error=f"{name}: {where}: {str(exc)[:300]}"), True
