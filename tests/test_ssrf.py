"""The SSRF guard: which addresses are refused, URL checks, and the resolver aiohttp connects through.

No network beyond 127.0.0.1: host names come from a fake resolver, except ``localhost``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from ipaddress import ip_address

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from publisher.errors import PublisherError
from publisher.sending.ssrf import DestinationPolicy, DestinationRefused, GuardedResolver

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"
LOOPBACK_ONLY = DestinationPolicy.from_strings(["127.0.0.0/8"])


class FakeResolver(AbstractResolver):
    """Answers every name with the chosen addresses, and remembers what it was asked."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.asked: list[tuple[str, int, socket.AddressFamily]] = []
        self.closed = False

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append((host, port, family))
        return [ResolveResult(hostname=host, host=address, port=port,
                              family=socket.AF_INET6 if ":" in address else socket.AF_INET, proto=0, flags=0)
                for address in self.addresses]

    async def close(self) -> None:
        self.closed = True


def exception_chain(exc: BaseException | None) -> str:
    """Every message in ``exc`` and its causes, to find a reason however aiohttp wrapped it."""
    messages = []
    while exc is not None:
        messages.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(messages)


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.5", "private"),
    ("172.16.3.4", "private"),
    ("192.168.1.1", "private"),
    ("fd12:3456::1", "private"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("100.64.0.1", "CGNAT"),
    ("100.100.100.200", "CGNAT"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("198.18.0.1", "benchmarking"),
    ("192.0.2.10", "documentation"),
    ("2001:db8::1", "documentation"),
    ("::ffff:127.0.0.1", "IPv4-mapped address of 127.0.0.1, a loopback"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("::127.0.0.1", "IPv4-compatible address of 127.0.0.1, a loopback"),
    ("2002:0a00:0001::", "6to4 address of 10.0.0.1, a private"),
    ("64:ff9b::a9fe:a9fe", "NAT64 address of 169.254.169.254, a cloud metadata"),
    ("64:ff9b::10.1.2.3", "private"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:10::1", "not globally routable"),
    (PUBLIC_V4, None),
    (PUBLIC_V6, None),
    ("8.8.8.8", None),
    ("::ffff:" + PUBLIC_V4, None),
    ("2002:5db8:d822::1", None),
    ("64:ff9b::5db8:d822", None),
])
def test_refusal_by_address(address: str, reason: str | None) -> None:
    refusal = DestinationPolicy().refusal(address)
    if reason is None:
        assert refusal is None
    else:
        assert refusal is not None and reason in refusal, refusal


def test_refusal_takes_address_objects_and_rejects_non_addresses() -> None:
    assert DestinationPolicy().refusal(ip_address("10.9.8.7")) == "a private address (10.0.0.0/8)"
    assert DestinationPolicy().refusal(ip_address("169.254.169.254")) == "a cloud metadata address (169.254.169.254)"
    with pytest.raises(ValueError):
        DestinationPolicy().refusal("not-an-address")
    assert DestinationPolicy().refusal_class("::ffff:127.0.0.1") == "loopback address"
    assert DestinationPolicy().refusal_class("2001:10::1") == "special-purpose address"
    assert DestinationPolicy().refusal_class(PUBLIC_V4) is None


def test_allowed_networks_admit_exactly_their_addresses() -> None:
    policy = DestinationPolicy.from_strings(["127.0.0.1/32", " fd00:1::/64 "])
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("::ffff:127.0.0.1") is None  # the address actually reached is 127.0.0.1
    assert "loopback" in (policy.refusal("127.0.0.2") or "")
    assert policy.refusal("fd00:1::7") is None
    assert "private" in (policy.refusal("fd00:2::7") or "")


def test_a_bare_address_is_a_single_host_network() -> None:
    assert DestinationPolicy.from_strings(["10.0.0.5"]).allowed_networks == DestinationPolicy.from_strings(
        ["10.0.0.5/32"]).allowed_networks


@pytest.mark.parametrize("entry", ["300.1.1.1/8", "10.0.0.5/8", "hooks.example", ""])
def test_from_strings_names_the_bad_entry(entry: str) -> None:
    with pytest.raises(ValueError, match=repr(entry)):
        DestinationPolicy.from_strings(["10.0.0.0/8", entry])


def test_the_error_is_a_publisher_error_with_its_parts() -> None:
    error = DestinationRefused("http://x.example/hook", "private address", "x.example: 10.0.0.5 is private")
    assert isinstance(error, PublisherError)
    assert str(error) == "http://x.example/hook: destination not allowed (private address)"
    assert (error.destination, error.reason, error.detail) == (
        "http://x.example/hook", "private address", "x.example: 10.0.0.5 is private")


@pytest.mark.parametrize(("url", "words"), [
    ("ftp://hooks.example/x", "scheme 'ftp'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("hooks.example/x", "no scheme"),
    ("http://user:pw@hooks.example/x", "credentials"),
    ("http://user@hooks.example/x", "credentials"),
    ("http://", "no host"),
    ("http:///x", "no host"),
    ("http://127.1/", "canonical"),
    ("http://2130706433/", "canonical"),
    ("http://0x7f.0.0.1/", "canonical"),
    ("http://127.0.0.1./", "canonical"),
    ("http://[::1]:8080/", "loopback"),
    ("https://[::ffff:a9fe:a9fe]/latest/meta-data", "cloud metadata"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    # A zone id is stripped and the address checked: ``::1%`` is no IP address to ``ipaddress``, aiohttp
    # connects to it without asking the resolver, and getaddrinfo maps it to ::1.
    ("http://[::1%25]/", "loopback"),
    ("http://[::1%25eth0]/", "loopback"),
    ("http://[::1%2525]/", "loopback"),
    ("http://[::ffff:127.0.0.1%25]/", "loopback"),
    ("http://127.0.0.1%2e/", "percent sign"),
    ("http://hooks.example%25/", "percent sign"),
    ("http://[::1", "does not parse"),
])
def test_check_url_refuses(url: str, words: str) -> None:
    with pytest.raises(DestinationRefused, match=words):
        DestinationPolicy().check_url(url)


def test_check_url_tells_the_reason_class_and_logs_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DestinationRefused) as caught:
        DestinationPolicy().check_url("http://10.1.2.3/x")
    assert str(caught.value) == "http://10.1.2.3/x: destination not allowed (private address)"
    assert "http://10.1.2.3/x: 10.1.2.3 is a private address (10.0.0.0/8); add it to [publisher] " \
           "allowed_networks to permit it" in caplog.text


def test_check_url_never_echoes_a_password() -> None:
    with pytest.raises(DestinationRefused) as caught:
        DestinationPolicy().check_url("https://admin:hunter2@hooks.example/x")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", [
    "https://hooks.example.com/walhook",
    "HTTP://Hooks.Example.com:8443/a?b=c",
    f"http://{PUBLIC_V4}/x",
    f"https://[{PUBLIC_V6}]:443/x",
    "https://1password.example/x",
    "https://hooks.example.com./x",
])
def test_check_url_accepts(url: str) -> None:
    DestinationPolicy().check_url(url)


def test_check_url_allows_listed_literals() -> None:
    LOOPBACK_ONLY.check_url("http://127.0.0.1:8080/hook")
    with pytest.raises(DestinationRefused, match="private"):
        LOOPBACK_ONLY.check_url("http://10.0.0.1/hook")


NOT_PUBLIC = "https://hooks.example/x: destination not allowed (the host name does not resolve to a public address)"


async def test_check_destination_refuses_if_any_address_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    resolver = FakeResolver(PUBLIC_V4, "10.0.0.5")
    with pytest.raises(DestinationRefused) as caught:
        await DestinationPolicy().check_destination("https://hooks.example/x", resolver)
    # The tenant learns the class, never what the deployment's DNS answered; the operator's log has it all.
    assert str(caught.value) == NOT_PUBLIC
    assert "10.0.0.5 is a private address" in caplog.text
    assert resolver.asked == [("hooks.example", 443, socket.AF_UNSPEC)]
    assert not resolver.closed  # a resolver passed in belongs to the caller


async def test_check_destination_accepts_public_names() -> None:
    await DestinationPolicy().check_destination("http://hooks.example:8080/x", FakeResolver(PUBLIC_V4, PUBLIC_V6))


async def test_check_destination_does_not_resolve_literals() -> None:
    resolver = FakeResolver("10.0.0.5")
    await DestinationPolicy().check_destination(f"http://{PUBLIC_V4}/x", resolver)
    assert resolver.asked == []
    with pytest.raises(DestinationRefused, match="scheme"):
        await DestinationPolicy().check_destination("gopher://hooks.example/", resolver)
    assert resolver.asked == []


class FailingResolver(FakeResolver):
    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        raise OSError(-2, "Name or service not known")


async def test_a_name_that_does_not_resolve_reads_like_one_that_resolves_privately(
        caplog: pytest.LogCaptureFixture) -> None:
    # Two different messages would tell a tenant which names exist in the deployment's internal DNS.
    with pytest.raises(DestinationRefused) as caught:
        await DestinationPolicy().check_destination("https://hooks.example/x", FailingResolver())
    assert str(caught.value) == NOT_PUBLIC
    assert "does not resolve ([Errno -2] Name or service not known)" in caplog.text


async def test_check_destination_resolves_localhost_for_real(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DestinationRefused) as caught:
        await DestinationPolicy().check_destination("http://localhost:9/hook")
    message = str(caught.value)
    assert "destination not allowed" in message and "127.0.0.1" not in message and "loopback" not in message
    assert "is a loopback address" in caplog.text
    # localhost may also resolve to ::1, and check_destination refuses if any address is refused.
    await DestinationPolicy.from_strings(["127.0.0.0/8", "::1"]).check_destination("http://localhost:9/hook")


async def test_guarded_resolver_drops_refused_addresses() -> None:
    inner = FakeResolver(PUBLIC_V4, "10.0.0.5", PUBLIC_V6, "::1")
    results = await GuardedResolver(DestinationPolicy(), inner).resolve("hooks.example", 443)
    assert [result["host"] for result in results] == [PUBLIC_V4, PUBLIC_V6]
    assert results[0]["port"] == 443


async def test_guarded_resolver_refuses_when_nothing_remains(caplog: pytest.LogCaptureFixture) -> None:
    guarded = GuardedResolver(DestinationPolicy(), FakeResolver("10.0.0.5", "169.254.169.254"))
    with pytest.raises(DestinationRefused) as caught:
        await guarded.resolve("hooks.example", 80)
    assert str(caught.value) == ("hooks.example: destination not allowed "
                                 "(the host name does not resolve to a public address)")
    assert "hooks.example: 10.0.0.5 is a private address (10.0.0.0/8)" in caplog.text


async def test_guarded_resolver_reports_a_name_that_does_not_resolve_like_a_refused_one(
        caplog: pytest.LogCaptureFixture) -> None:
    # A name whose DNS its owner controls can point (CNAME) at internal names after creation: the attempt
    # log must not tell which of them exist.
    with pytest.raises(DestinationRefused) as caught:
        await GuardedResolver(DestinationPolicy(), FailingResolver()).resolve("hooks.example", 443)
    assert str(caught.value) == ("hooks.example: destination not allowed "
                                 "(the host name does not resolve to a public address)")
    assert "hooks.example: the host name does not resolve ([Errno -2] Name or service not known)" in caplog.text


async def test_guarded_resolver_passes_an_empty_answer_through_and_closes_its_inner() -> None:
    inner = FakeResolver()
    guarded = GuardedResolver(DestinationPolicy(), inner)
    assert await guarded.resolve("nothing.example") == []
    await guarded.close()
    assert inner.closed


@pytest.fixture
async def receiver() -> AsyncIterator[int]:
    """A webhook receiver on 127.0.0.1 answering 200; yields its port."""
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def post(policy: DestinationPolicy, url: str) -> int:
    resolver = GuardedResolver(policy)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver)) as session, \
                session.post(url, data=b"{}") as response:
            return response.status
    finally:
        await resolver.close()


async def test_end_to_end_a_loopback_name_is_refused(receiver: int) -> None:
    with pytest.raises((DestinationRefused, aiohttp.ClientConnectorError)) as caught:
        await post(DestinationPolicy(), f"http://localhost:{receiver}/")
    assert "destination not allowed" in exception_chain(caught.value)


async def test_end_to_end_an_allowed_loopback_name_is_reached(receiver: int) -> None:
    assert await post(LOOPBACK_ONLY, f"http://localhost:{receiver}/") == 200


async def test_end_to_end_ip_literals_bypass_the_resolver(receiver: int) -> None:
    # Why callers must also call check_url: aiohttp connects to a literal without asking the resolver.
    url = f"http://127.0.0.1:{receiver}/"
    assert await post(DestinationPolicy(), url) == 200
    with pytest.raises(DestinationRefused, match="loopback"):
        DestinationPolicy().check_url(url)


async def test_end_to_end_a_name_that_does_not_resolve_reads_as_not_allowed() -> None:
    with pytest.raises(DestinationRefused) as caught:  # through aiohttp's connector, unwrapped
        await post(DestinationPolicy(), "http://nothing.invalid/")
    assert "destination not allowed" in str(caught.value) and "Errno" not in str(caught.value)
