"""Refusing webhook destinations inside the network walhook runs in (server-side request forgery).

A webhook URL is chosen by whoever creates an integration, and walhook POSTs to it from inside the
deployment's network. Without a guard, ``http://169.254.169.254/...`` or ``http://db.internal:5432/``
would make walhook a proxy into places the integration author cannot otherwise reach.

Three layers, one policy (:class:`DestinationPolicy`):

* :meth:`DestinationPolicy.refusal` is the pure decision for one IP address;
* :meth:`DestinationPolicy.check_url` / :meth:`DestinationPolicy.check_destination` vet a URL up front,
  so creating an integration with a bad URL fails with a clear message;
* the webhook sender (``publisher.sending.http``) checks every address a host resolves to when it opens a
  connection and connects only to an allowed one, which also defeats DNS rebinding (a name that
  resolved to a public address at creation time and to a private one later);
  :class:`GuardedResolver` does the same for an aiohttp connector.

Only addresses inside ``[publisher] allowed_networks`` escape the rules (a demo receiving webhooks on
127.0.0.1, a deployment whose receivers live on a private network).

Refusals reach tenants (API responses, the attempt log) as "destination not allowed" with a reason
class; what the resolver answered is only logged (:class:`DestinationRefused`).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from publisher.errors import PublisherError

log = logging.getLogger("walhook.ssrf")

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})


class DestinationRefused(PublisherError):
    """A webhook destination is not allowed by the :class:`DestinationPolicy`.

    The message is what a tenant may be told: the destination they gave and a reason class, e.g.
    ``http://x.example/hook: destination not allowed (the host name does not resolve to a public
    address)``. It never holds what the deployment's resolver answered, which would map its internal
    DNS for whoever creates integrations. ``detail`` has the whole story for operators (the
    addresses, the resolver's error, the setting to change); it is logged when the refusal is made.
    """

    def __init__(self, destination: str, reason: str, detail: str | None = None) -> None:
        self.destination = destination
        self.reason = reason
        self.detail = detail or f"{destination}: {reason}"
        super().__init__(f"{destination}: destination not allowed ({reason})")


# A refused name reads the same whether it does not resolve or resolves to a refused address:
# two messages would tell a tenant which names exist in the deployment's DNS.
NOT_PUBLIC = "the host name does not resolve to a public address"


def _refused(destination: str, reason: str, detail: str | None = None) -> DestinationRefused:
    """The error to raise, with its detail logged for operators (tenants only see the reason class)."""
    error = DestinationRefused(destination, reason, detail)
    log.warning("destination refused: %s", error.detail)
    return error


def _address_detail(destination: str, address: object, refusal: str) -> str:
    return f"{destination}: {address} is {refusal}; add it to [publisher] allowed_networks to permit it"


def unresolvable(host: str, error: OSError) -> DestinationRefused:
    """The refusal, at connect time, of a host name that does not resolve: it reads like any other."""
    return _refused(host, NOT_PUBLIC, f"{host}: the host name does not resolve ({error})")


def all_refused(host: str, address: str, reason: str) -> DestinationRefused:
    """The refusal, at connect time, of a host every address of which is refused (``address``: the first)."""
    return _refused(host, NOT_PUBLIC, _address_detail(host, address, reason))


def _table(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), what) for cidr, what in rows)


# First match wins, so the narrow entries (metadata, broadcast) come before the ranges holding them.
_SPECIAL_PURPOSE = _table(
    ("169.254.169.254/32", "a cloud metadata address"),
    ("fd00:ec2::254/128", "a cloud metadata address"),
    ("0.0.0.0/8", 'an unspecified ("this network") address'),
    ("127.0.0.0/8", "a loopback address"),
    ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("100.64.0.0/10", "a CGNAT (shared address space) address"),
    ("169.254.0.0/16", "a link-local address"),
    ("192.0.0.0/24", "an IETF protocol assignment address"),
    ("192.0.2.0/24", "a documentation address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("192.88.99.0/24", "a 6to4 relay anycast address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
    ("fc00::/7", "a private (unique local) address"),
    ("fec0::/10", "a private (deprecated site-local) address"),
    ("fe80::/10", "a link-local address"),
    ("ff00::/8", "a multicast address"),
    ("100::/64", "a discard-only address"),
    # Teredo hides its client address (XOR-ed) behind an arbitrary relay: no webhook receiver needs it.
    ("2001::/32", "a Teredo tunnel address"),
    ("2001:2::/48", "a benchmarking address"),
    ("2001:db8::/32", "a documentation address"),
    ("3fff::/20", "a documentation address"),
)

# IPv6 forms whose last 32 bits are the IPv4 address really reached (6to4 is handled by ``sixtofour``).
_LAST_32_BITS_IPV4 = _table(
    ("64:ff9b::/96", "a NAT64"),
    ("64:ff9b:1::/48", "a local-use NAT64"),
    ("::ffff:0:0:0/96", "an IPv4-translated"),
    ("::/96", "an IPv4-compatible"),
)

# A host whose last label is a number is an IPv4 address to a URL parser (WHATWG) and to inet_aton:
# ``127.1``, ``2130706433``, ``0x7f.0.0.1`` all reach 127.0.0.1. Only the canonical dotted quad is accepted.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")


def _shown(network: IPNetwork) -> str:
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def _special_purpose(address: IPAddress) -> tuple[str, str] | None:
    """The reason ``address`` is in a special-purpose range of the table and its class, or None."""
    for network, what in _SPECIAL_PURPOSE:
        if address.version == network.version and address in network:
            return f"{what} ({_shown(network)})", _reason_class(what)
    return None


def _reason_class(what: str) -> str:
    """``a loopback address`` -> ``loopback address``: the words a tenant is told."""
    return what.split(" ", 1)[1] if what.split(" ", 1)[0] in ("a", "an", "the") else what


def _embedded_ipv4(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 address really leads to (mapped, 6to4, NAT64...), with the form's name."""
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped", address.ipv4_mapped
    if address.sixtofour is not None:
        return "a 6to4", address.sixtofour
    for network, form in _LAST_32_BITS_IPV4:
        if address in network:
            return form, IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def _ip_literal(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one (yarl gives IPv6 hosts without brackets), else None.

    A zone id (``fe80::1%eth0``) is dropped: the address is what is checked. ``ipaddress`` refuses
    some zoned forms (``::1%``) that getaddrinfo happily maps to the bare address.
    """
    try:
        return ipaddress.ip_address(host.partition("%")[0] if ":" in host else host)
    except ValueError:
        return None


def _is_numeric_host(host: str) -> bool:
    """True for hosts a resolver would read as a (non-canonical) IPv4 address, such as ``127.1``."""
    return _NUMERIC_LABEL.fullmatch(host.rstrip(".").rpartition(".")[2].lower()) is not None


def _without_credentials(url: URL) -> str:
    # Messages end up in logs and API responses: never echo a password.
    # (with_user refuses URLs without a host, which cannot carry credentials anyway.)
    has_credentials = url.raw_user is not None or url.raw_password is not None
    return str(url.with_user(None) if has_credentials else url)


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Which addresses webhooks may be sent to.

    Every globally routable address is allowed; loopback, private, link-local, cloud metadata, CGNAT,
    multicast, reserved and other special-purpose addresses are refused, including when embedded in
    an IPv6 address (IPv4-mapped, IPv4-compatible, 6to4, NAT64). An address inside one of
    ``allowed_networks`` is allowed whatever range it is in.

    ``allowed_networks`` defaults to empty: only public addresses are allowed.
    """

    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def from_strings(cls, entries: Iterable[str]) -> DestinationPolicy:
        """A policy allowing each entry, a CIDR network (``10.20.0.0/16``) or a single address (``127.0.0.1``).

        Raises ``ValueError`` naming the first entry that does not parse (or has host bits set).
        """
        networks: list[IPNetwork] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip()))
            except ValueError as exc:
                raise ValueError(f"allowed_networks entry {entry!r} is not an IP address or network: {exc}") from exc
        return cls(tuple(networks))

    def refusal(self, address: str | IPv4Address | IPv6Address) -> str | None:
        """None if ``address`` may be connected to, else why not, e.g. ``a loopback address (127.0.0.0/8)``.

        Raises ``ValueError`` when ``address`` is a string that is not an IP address.
        """
        verdict = self._verdict(address)
        return None if verdict is None else verdict[0]

    def refusal_class(self, address: str | IPv4Address | IPv6Address) -> str | None:
        """None if ``address`` may be connected to, else the class a tenant is told, e.g. ``loopback address``."""
        verdict = self._verdict(address)
        return None if verdict is None else verdict[1]

    def _verdict(self, address: str | IPv4Address | IPv6Address) -> tuple[str, str] | None:
        """(the operator's reason, the tenant's reason class), or None when allowed."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if self._allows(ip):
            return None
        if (special := _special_purpose(ip)) is not None:
            return special
        if isinstance(ip, IPv6Address) and (embedded := _embedded_ipv4(ip)) is not None:
            form, ipv4 = embedded
            inner = self._verdict(ipv4)
            return None if inner is None else (f"{form} address of {ipv4}, {inner[0]}", inner[1])
        # Backstop for ranges the table does not name (ORCHID, AMT, future IANA assignments).
        return None if ip.is_global else ("a special-purpose address (not globally routable)",
                                          "special-purpose address")

    def _allows(self, ip: IPAddress) -> bool:
        return any(ip.version == network.version and ip in network for network in self.allowed_networks)

    def check_url(self, url: str) -> None:
        """Refuse ``url`` unless it is http(s), has a host and no credentials, and any IP literal host is allowed.

        Host names are not resolved here (that is :meth:`check_destination`, or :class:`GuardedResolver`
        at connect time). Raises :class:`DestinationRefused`.
        """
        parsed = self._parse(url)
        shown = _without_credentials(parsed)
        if not parsed.scheme:
            raise _refused(shown, "the URL has no scheme (http or https)")
        if parsed.scheme not in ALLOWED_SCHEMES:
            raise _refused(shown, f"the scheme {parsed.scheme!r} is not http or https")
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise _refused(shown, "credentials in the URL are not allowed")
        host = parsed.host
        if not host:
            raise _refused(shown, "the URL has no host")
        ip = _ip_literal(host)
        if ip is None and "%" in host:
            raise _refused(shown, "a percent sign in the host is only allowed as an IPv6 zone id")
        if ip is None and _is_numeric_host(host):
            raise _refused(shown, f"the host {host!r} is a numeric address but not a canonical one")
        if ip is not None and (verdict := self._verdict(ip)) is not None:
            raise _refused(shown, verdict[1], _address_detail(shown, ip, verdict[0]))

    @staticmethod
    def _parse(url: str) -> URL:
        # yarl is what aiohttp parses the URL with, so both see the same host.
        try:
            return URL(url)
        except (ValueError, TypeError) as exc:
            raise _refused("the URL", "does not parse", f"{url!r} does not parse: {exc}") from exc

    async def check_destination(self, url: str, resolver: AbstractResolver | None = None) -> None:
        """:meth:`check_url`, then resolve the host and refuse if ANY of its addresses is refused.

        Meant for creating an integration, to fail early and clearly; sending still needs
        :class:`GuardedResolver`, since DNS answers change. ``resolver`` defaults to aiohttp's
        ``ThreadedResolver`` (the system resolver, as :class:`GuardedResolver` uses). A host that
        does not resolve is refused too. Raises :class:`DestinationRefused`.
        """
        self.check_url(url)
        parsed = URL(url)
        assert parsed.host is not None and parsed.raw_host is not None  # check_url refuses host-less URLs
        if _ip_literal(parsed.host) is not None:
            return
        shown = _without_credentials(parsed)
        try:
            results = await _resolve_once(resolver, parsed.raw_host, parsed.port or 0)
        except OSError as exc:
            raise _refused(shown, NOT_PUBLIC, f"{shown}: the host name does not resolve ({exc})") from exc
        for result in results:
            if (reason := self.refusal(result["host"])) is not None:
                raise _refused(shown, NOT_PUBLIC, _address_detail(shown, result["host"], reason))


async def _resolve_once(resolver: AbstractResolver | None, host: str, port: int) -> list[ResolveResult]:
    """Every address of ``host`` (IPv4 and IPv6, as a connector with the default family would try)."""
    owned = resolver is None
    resolver = resolver or ThreadedResolver()
    try:
        return await resolver.resolve(host, port, family=socket.AF_UNSPEC)
    finally:
        if owned:
            await resolver.close()


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops the addresses a :class:`DestinationPolicy` refuses.

    Use it as ``aiohttp.TCPConnector(resolver=GuardedResolver(policy))``: the policy then applies to
    the very addresses the connector connects to, so a name cannot pass a check and later resolve
    somewhere else (DNS rebinding). When every address of a host is refused, :meth:`resolve` raises
    :class:`DestinationRefused` with the reason for the first; it is not an ``OSError``, so aiohttp
    does not wrap it and it comes out of ``session.post(...)`` as is.

    Caveats, each needing the caller's attention:

    * aiohttp does NOT call the resolver for IP-literal hosts (``http://10.0.0.5/``,
      ``http://[::1]/``): it connects to them directly. Call ``policy.check_url(url)`` before every
      request, and do not follow redirects (or check each ``Location`` the same way).
    * With a proxy, the resolver only sees the proxy's host; the destination is resolved by the proxy.
    * ``TCPConnector`` does not close a resolver it was given: close the connector, then this.
    """

    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver | None = None) -> None:
        """Guard ``inner``; by default a ``ThreadedResolver``, created on first use (it needs a running loop)."""
        self._policy = policy
        self._inner = inner

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        """The inner resolver's answer without refused addresses; :class:`DestinationRefused` if none remain
        or the name does not resolve."""
        try:
            results = await self._resolver().resolve(host, port, family)
        except OSError as exc:
            # Told apart from a refusal, a failure would say which names (a CNAME may lead anywhere) exist.
            raise _refused(host, NOT_PUBLIC, f"{host}: the host name does not resolve ({exc})") from exc
        verdicts = [(result, self._policy.refusal(result["host"])) for result in results]
        allowed = [result for result, reason in verdicts if reason is None]
        if verdicts and not allowed:
            first, reason = verdicts[0]
            raise _refused(host, NOT_PUBLIC, _address_detail(host, first["host"], reason or ""))
        return allowed

    async def close(self) -> None:
        """Close the inner resolver."""
        if self._inner is not None:
            await self._inner.close()

    def _resolver(self) -> AbstractResolver:
        if self._inner is None:
            self._inner = ThreadedResolver()
        return self._inner
