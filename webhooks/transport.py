"""Sending a webhook over HTTP without letting a URL reach inside the network (SSRF).

The host is resolved once per send, every address it resolves to must be public (unless
`WEBHOOK_ALLOW_PRIVATE`), and the connection goes to the address checked, not to the name:
a DNS answer that changes between the check and the connect (rebinding) cannot move it.
Redirects are never followed: a 3xx answer is a failed attempt, so a public endpoint
cannot bounce the request to a private address either.
"""

import http.client
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit


class Refused(Exception):
    """The URL may not be called; the text says why."""


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def resolve(url: str, *, allow_private: bool) -> tuple[str, int, str, str]:
    """(scheme, port, host, the address to connect to) for a URL that may be called;
    Refused with the reason otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (allow_private and parts.scheme == "http"):
        raise Refused("The URL must start with https://.")
    host = parts.hostname
    if not host:
        raise Refused("The URL has no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused("The URL's port is not a number between 0 and 65535.") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise Refused(f"The host {host!r} does not resolve to an address.") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not allow_private:
        # Every address, not only the first: a name answering with a public and a private
        # address would otherwise reach the private one on some connections.
        for address in addresses:
            if not _is_public(address):
                raise Refused(
                    f"The host {host!r} resolves to {address}, which is not a public address."
                )
    return parts.scheme, port, host, str(addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host, port, *, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host, port, *, address, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        # The certificate is checked against the name, the connection goes to the address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(
    url: str, *, body: bytes, headers: dict, timeout: float, allow_private: bool
) -> tuple[int, str]:
    """POST `body` to `url`; (status, the start of the answer's body). Refused before any
    connection when the URL may not be called; OSError and http.client errors as they come."""
    scheme, port, host, address = resolve(url, allow_private=allow_private)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kind = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    connection = kind(host, port, address=address, timeout=timeout)
    try:
        connection.request(
            "POST",
            path,
            body=body,
            headers={**headers, "Content-Type": "application/json", "User-Agent": "Waypoint"},
        )
        response = connection.getresponse()
        return response.status, response.read(2000).decode("utf-8", "replace")
    finally:
        connection.close()
