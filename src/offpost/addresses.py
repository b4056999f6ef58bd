"""Where offpost may send a webhook: public addresses only, connected to as vetted.

A webhook URL is a client's to choose, and offpost's servers make the request. A
URL that names (or resolves to) an address inside the deployment — loopback, a
private or link-local network, the cloud metadata service at 169.254.169.254, the
sandbox's control routes — would let one client reach what no client should
(server-side request forgery). So every address a webhook host stands for is
checked, in whatever notation it was written: ``getaddrinfo`` reads the numeric
forms ``2130706433``, ``0x7f.1`` and ``017700000001`` as 127.0.0.1 just as a
connection would, and IPv4-mapped IPv6 addresses are judged by the IPv4 address
inside.

The check runs at registration and again at each delivery (a name can be pointed
elsewhere after it was registered), and the delivery connects to the address it
vetted, not to a second lookup of the name: a DNS answer that changes between
the check and the connection (DNS rebinding) gains nothing. TLS still names the
host (SNI and certificate check) and so does the ``Host`` header.

``OFFPOST_WEBHOOK_ALLOW_PRIVATE=true`` lets an operator allow private addresses
and plain http, for development and tests on one machine (docs/security.md).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class AddressRefusedError(ValueError):
    """The URL may not receive webhooks; the message says why, in one sentence."""


class UnresolvableError(AddressRefusedError):
    """The host name does not resolve (now)."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` stands for (numeric notations included), as text."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableError(f"its host {host} does not resolve ({exc})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refusal(address: IPAddress) -> str | None:
    """Why a webhook may not go to ``address``; None for a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped)
    if address.is_loopback:
        return "is a loopback address"
    if address.is_unspecified:
        return "is the unspecified address"
    if address.is_link_local:
        return "is a link-local address (cloud metadata services live there)"
    if address.is_multicast:
        return "is a multicast address"
    if address.is_private:
        return "is a private-network address"
    if address.is_reserved or not address.is_global:
        return "is a reserved or non-public address"
    return None


@dataclass(frozen=True, slots=True)
class Vetted:
    """A webhook URL and the one address a delivery connects to."""

    url: str
    #: The host as written in the URL: TLS's server name and the ``Host`` header.
    host: str
    #: ``host[:port]`` as the URL has it.
    netloc: str
    address: str

    def request_url(self) -> str:
        """The URL with its host replaced by the vetted address (no second lookup)."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        netloc = f"{literal}:{parts.port}" if parts.port is not None else literal
        return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))

    def request_options(self) -> dict[str, Any]:
        """The ``headers`` and ``extensions`` that keep the host's name on the wire."""
        return {"headers": {"Host": self.netloc}, "extensions": {"sni_hostname": self.host}}


def vet(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> Vetted:
    """The address to send a webhook for ``url`` to, or :class:`AddressRefusedError`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and allow_private):
        raise AddressRefusedError("it must be an https:// URL")
    host = parts.hostname or ""
    if not host:
        raise AddressRefusedError("it has no host")
    port = parts.port or (443 if scheme == "https" else 80)
    addresses = resolver(host, port)
    if not addresses:
        raise UnresolvableError(f"its host {host} does not resolve")
    if not allow_private:
        for text in addresses:
            why = refusal(ipaddress.ip_address(text.split("%", 1)[0]))
            if why is not None:
                named = host if host == text else f"{host} ({text})"
                raise AddressRefusedError(f"its host {named} {why}")
    return Vetted(url=url, host=host, netloc=parts.netloc, address=addresses[0])


def check_registration(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> None:
    """What registering ``url`` refuses: a forbidden scheme or address. A name that does
    not resolve now is accepted (each delivery checks it again, and fails until it does)."""
    try:
        vet(url, allow_private=allow_private, resolver=resolver)
    except UnresolvableError:
        return
