"""Where a webhook may be sent: a well-formed http(s) URL whose host is allowed and resolves to
public addresses only.

Whoever can enqueue a job names a ``callback_url``, so the workers must not become a way into
our own network (server-side request forgery: ``http://127.0.0.1:6379/``, the cloud metadata
service at ``169.254.169.254``, a private range). ``Targets`` holds the rules:

- the URL's shape (``url_problem``) and ``PROVISIONER_WEBHOOK_ALLOWED_HOSTS``;
- every address the host resolves to must be public: not loopback, private, link-local,
  multicast, reserved or unspecified, IPv4 or IPv6, including IPv4 carried inside IPv6
  (``::ffff:127.0.0.1``, 6to4, Teredo, NAT64). Addresses are read as the system resolver reads
  them, so ``2130706433`` and ``0177.0.0.1`` are 127.0.0.1 here as they would be when connecting.

The rules apply when an event or the accounts file names the URL (``problem``: a host that does
not resolve yet is let through, as sending checks again) and before every send
(``destination``), which hands back the URL rewritten to the very address it checked: the
request connects there, with the original ``Host`` and TLS server name, so a DNS answer that
changes between the check and the connection (rebinding) is never followed.

``PROVISIONER_WEBHOOK_ALLOW_PRIVATE=1`` lifts the address rule, for development and tests.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from worker.settings import Settings

if TYPE_CHECKING:
    import httpx

#: A callback URL is at most this long.
MAX_URL_LENGTH = 2048

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: What makes an address not public, in the words errors use; the first that applies is named.
_KINDS = (
    ("an unspecified address", "is_unspecified"),
    ("a loopback address", "is_loopback"),
    ("a link-local address", "is_link_local"),
    ("a multicast address", "is_multicast"),
    ("a private address", "is_private"),
    ("a reserved address", "is_reserved"),
)
#: NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 address reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_PUBLIC_ONLY = "webhooks go to public addresses only (PROVISIONER_WEBHOOK_ALLOW_PRIVATE)"


class Refused(Exception):
    """A delivery that must not be sent to its URL now; ``final``: it never may be."""

    def __init__(self, reason: str, *, final: bool = True) -> None:
        super().__init__(reason)
        self.final = final


@dataclass(frozen=True)
class Destination:
    """Where one request goes: ``url`` names the checked address; ``host`` is the name the
    receiver expects in ``Host`` and, over TLS, as the server name its certificate is for."""

    url: str
    host: str
    host_header: str

    def request_extensions(self) -> dict[str, str]:
        return {"sni_hostname": self.host} if self.url.startswith("https:") else {}


def parse_hosts(value: str) -> frozenset[str]:
    """A comma-separated host list as a set of lower-case hosts."""
    return frozenset(
        host.strip().lower().rstrip(".") for host in value.split(",") if host.strip(" .")
    )


def host_allowed(host: str, allowed: Collection[str]) -> bool:
    """``host`` is in ``allowed``, or a subdomain of a ``*.domain`` entry; anything if empty."""
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    return any(
        host == entry or (entry.startswith("*.") and host.endswith(entry[1:])) for entry in allowed
    )


def url_problem(value: object, allowed: Collection[str] = ()) -> str | None:
    """What is wrong with ``value`` as a callback URL, in words ("must use http or https"), or
    None: an absolute http(s) URL with a host, no user name or password, at most
    ``MAX_URL_LENGTH`` characters, and a host ``allowed`` (empty: any). Resolves nothing."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    url = value.strip()
    if len(url) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "must not contain a user name or password"
    host = parts.hostname
    if not host:
        return "must name a host"
    if port == 0:
        return "must not use port 0"
    if not host_allowed(host, allowed):
        return f"host {host!r} is not allowed (PROVISIONER_WEBHOOK_ALLOWED_HOSTS)"
    return None


def address_problem(address: Address) -> str | None:
    """Why ``address`` is not one a webhook may reach ("a loopback address"), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = address.ipv4_mapped or address.sixtofour
        if carried is None and address.teredo is not None:
            carried = address.teredo[1]
        if carried is None and address in _NAT64:
            carried = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if carried is not None:
            inner = address_problem(carried)
            if inner is not None:
                return inner
    for words, test in _KINDS:
        if getattr(address, test):
            return words
    if not address.is_global:  # shared (100.64/10), documentation, benchmarking ranges...
        return "not a public address"
    return None


def resolve(host: str, port: int) -> list[Address]:
    """The addresses ``host`` resolves to, in the resolver's order, each once; OSError if it
    does not resolve."""
    seen: dict[Address, None] = {}
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        # An IPv6 scope ("fe80::1%eth0") is not part of the address.
        seen.setdefault(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]), None)
    return list(seen)


@dataclass(frozen=True)
class Targets:
    """The rules webhook URLs are held to: ``hosts`` (empty: any) and, unless
    ``allow_private``, public addresses only."""

    hosts: frozenset[str] = frozenset()
    allow_private: bool = False

    @classmethod
    def of(cls, settings: Settings) -> Targets:
        return cls(parse_hosts(settings.webhook_allowed_hosts), settings.webhook_allow_private)

    def problem(self, value: object) -> str | None:
        """What is wrong with ``value`` as a webhook URL, for the one who named it; a host that
        does not resolve now is not a problem here (``destination`` checks again)."""
        problem = url_problem(value, self.hosts)
        if problem is not None:
            return problem
        assert isinstance(value, str)
        url = value.strip()
        if not self.allow_private:
            parts = urlsplit(url)
            host = parts.hostname or ""
            try:
                addresses = resolve(host, parts.port or 0)
            except (OSError, UnicodeError):
                addresses = []
            problem = _addresses_problem(host, addresses)
        if problem is None:
            import httpx  # here: reading the settings need not load the HTTP client

            try:
                httpx.URL(url)
            except httpx.InvalidURL as exc:  # "0177.0.0.1" when private ones are allowed
                problem = f"is not a valid URL ({exc})"
        return problem

    def destination(self, url: str) -> Destination:
        """Where a delivery to ``url`` connects now; Refused if it must not (``final``) or cannot
        yet (the host does not resolve)."""
        problem = url_problem(url, self.hosts)
        if problem is not None:
            raise Refused(f"the URL {problem}")
        import httpx

        try:
            parsed = httpx.URL(url.strip())
        except httpx.InvalidURL as exc:
            raise Refused(f"the URL is not a valid URL ({exc})") from None
        host, port = _host_and_port(parsed)
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise Refused(
                f"the host does not resolve ({type(exc).__name__})", final=False
            ) from None
        if not addresses:
            raise Refused("the host does not resolve", final=False)
        if not self.allow_private:
            problem = _addresses_problem(host, addresses)
            if problem is not None:
                raise Refused(f"the URL {problem}")
        address = str(addresses[0])
        netloc = parsed.netloc.decode("ascii")
        return Destination(str(parsed.copy_with(host=address)), host.rstrip("."), netloc)


def _host_and_port(url: httpx.URL) -> tuple[str, int]:
    """The host as it goes on the wire (IDNA-encoded) and the port connected to."""
    return url.raw_host.decode("ascii"), url.port or (443 if url.scheme == "https" else 80)


def _addresses_problem(host: str, addresses: Collection[Address]) -> str | None:
    """The first address that is not public, in words; a hostname's addresses are not named,
    so an error shown to whoever enqueued says nothing of our network's layout."""
    for address in addresses:
        problem = address_problem(address)
        if problem is None:
            continue
        if _is_literal(host):
            return f"host {host} is {problem}; {_PUBLIC_ONLY}"
        return f"host {host!r} resolves to {problem}; {_PUBLIC_ONLY}"
    return None


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
