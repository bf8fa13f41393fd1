"""Which hosts Strongroom sends requests to on an administrator's say-so: a
destination's endpoint (S3, Azure, Google Cloud Storage) or SFTP server, the
URL of a webhook or Slack channel, and the server named in an Apprise URL.

A URL is a way to make the server itself ask something of a host only it can
reach. Refused always: link-local addresses (169.254.0.0/16, fe80::/10) and
the other addresses where cloud metadata services hand out the machine's own
credentials, whatever the notation (0xa9fea9fe, 2852039166, ::ffff:a9fe:a9fe)
or the host name that resolves to them. Refused unless ALLOW_PRIVATE_ENDPOINTS
is on: loopback and private addresses (127.0.0.0/8, 10.0.0.0/8, 192.168.0.0/16,
fc00::/7 …). It is on by default, because a self-hosted Strongroom normally
keeps its copies in a MinIO on 10.x and posts to a chat server on the same
network, and because an administrator who can name an endpoint can already
name any host as a source; an installation that must not reach its private
network (a shared cloud account) turns it off.

The check runs when the URL is saved and again before each connection, so a
name that resolved to a public address on the form and to 169.254.169.254
later is still refused; a name that does not resolve is left to the
connection, which fails on its own."""

import ipaddress
import re
import socket
from ipaddress import IPv4Address, IPv6Address
from urllib.parse import urlsplit

from django.conf import settings

# Metadata services outside the link-local range (which is refused as a whole).
METADATA_ADDRESSES = {
    ipaddress.ip_address("fd00:ec2::254"),  # AWS instance metadata over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("192.0.0.192"),  # Oracle Cloud (older instances)
}
METADATA_NAMES = {
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
}
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
# What inet_aton reads as an IPv4 address besides dotted decimal: 0x7f000001, 2130706433, 0177.1, 127.1.
LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


def endpoint_problem(url: str, allow_private: bool | None = None) -> str | None:
    """None when Strongroom may send requests to `url`; otherwise why not, in
    words that name the host (never the rest of the URL, which may be secret)."""
    if allow_private is None:
        allow_private = settings.ALLOW_PRIVATE_ENDPOINTS
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return "The URL cannot be read."
    if not host:
        return "The URL names no host."
    if host.rstrip(".").lower() in METADATA_NAMES:
        return f"{host} is a cloud metadata service: Strongroom never sends requests there."
    for address in addresses_of(host):
        target = embedded_ipv4(address) or address  # where a connection to it ends up
        problem = address_problem(target, allow_private)
        if problem:
            named = host if host.lower() == str(target) else f"{host} ({target})"
            return f"{named} is {problem}"
    return None


def addresses_of(host: str) -> list[IPv4Address | IPv6Address]:
    """Every address `host` stands for: itself when it is an address in any
    notation, else what it resolves to now (nothing when it does not resolve)."""
    literal = address_literal(host)
    if literal is not None:
        return [literal]
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    addresses: list[IPv4Address | IPv6Address] = []
    for *_, sockaddr in found:
        try:
            addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
        except ValueError:
            continue
    return addresses


def address_literal(host: str) -> IPv4Address | IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    if LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def embedded_ipv4(address: IPv4Address | IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one carries (::ffff:a.b.c.d, 64:ff9b::a.b.c.d,
    6to4), which is where a connection to it ends up."""
    if address.version != 6:
        return None
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_problem(address: IPv4Address | IPv6Address, allow_private: bool) -> str | None:
    """Why a connection to `address` is refused, or None."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata service's address: Strongroom never sends requests there."
    if address.is_link_local:
        return "a link-local address, where cloud metadata services answer: Strongroom never sends requests there."
    if address.is_unspecified or address.is_multicast:
        return "not the address of a server."
    if not allow_private and (address.is_loopback or address.is_private or not address.is_global):
        kind = "a loopback" if address.is_loopback else "a private"
        return (
            f"{kind} address, and this Strongroom sends no requests to private networks "
            "(ALLOW_PRIVATE_ENDPOINTS is off)."
        )
    return None
