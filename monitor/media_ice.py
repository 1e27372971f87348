"""Which ICE candidates the sidecar's WebRTC peers offer.

aiortc gathers host candidates through ``aioice.ice.get_host_addresses``, which lists every
interface *except* loopback, and by default adds Google's public STUN server. A sidecar runs
next to the platform and should offer exactly the addresses the deployment names (and no
public STUN), and tests must connect on a host whose only interface is ``lo``.

aioice has no per-connection option for this, so :func:`install` wraps
``aioice.ice.get_host_addresses`` once per process with a function that consults a
:class:`contextvars.ContextVar`. :func:`use_host_addresses` sets that variable for the
duration of a ``with`` block: candidate gathering started inside the block (aiortc's
``setLocalDescription``) sees the chosen addresses; every other peer keeps aioice's default.

aioice logs every connectivity check at INFO with both ends' addresses: the patient's IP
address and port (personal data) in a log that ``sessionguard serve`` writes at INFO.
:func:`install` raises the ``aioice`` logger to WARNING, unless the embedder has set its level.
aiortc logs the SDP (with every candidate's address) at DEBUG, so an embedder running its
root logger at DEBUG would log them too: ``aiortc`` is raised to INFO the same way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from signals.errors import ConfigError

__all__ = ["IceConfig", "install", "use_host_addresses"]

_CHOSEN: ContextVar[tuple[str, ...] | None] = ContextVar(
    "sessionguard_host_addresses", default=None
)
_MARK = "_sessionguard_wrapped"


@dataclass(frozen=True, slots=True)
class IceConfig:
    """ICE settings of the sidecar's peers.

    ``host_addresses``: the local addresses offered as host candidates; empty means "every
    non-loopback interface" (aioice's default). List ``127.0.0.1`` to accept peers on the
    same machine (tests, a loopback-only host). ``servers``: STUN/TURN URLs; empty by
    default, so no public STUN server is ever contacted.
    """

    host_addresses: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for address in self.host_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(f"ICE host address {address!r} is not an IP address") from None
        for url in self.servers:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ConfigError(f"ICE server {url!r} must start with stun:, turn: or turns:")

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> IceConfig:
        """Build from the ``media.ice`` mapping of the configuration file."""
        value = value or {}
        unknown = set(value) - {"host_addresses", "servers"}
        if unknown:
            raise ConfigError(f"unknown ICE setting(s): {', '.join(sorted(unknown))}")
        addresses = value.get("host_addresses") or []
        servers = value.get("servers") or []
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ConfigError("ICE host_addresses must be a list of IP addresses")
        if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
            raise ConfigError("ICE servers must be a list of stun:/turn: URLs")
        return cls(tuple(addresses), tuple(servers))

    def rtc_configuration(self) -> RTCConfiguration:
        """aiortc's configuration: the listed servers only (never aiortc's default STUN)."""
        return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in self.servers])


def install() -> None:
    """Wrap ``aioice.ice.get_host_addresses`` once, and keep aioice's INFO lines and aiortc's
    DEBUG lines (the peers' addresses, in checks, candidates and SDP) out of the log, unless
    the embedder set those loggers' levels; idempotent."""
    for name, level in (("aioice", logging.WARNING), ("aiortc", logging.INFO)):
        quiet = logging.getLogger(name)
        if quiet.level == logging.NOTSET:  # an embedder's own choice stands
            quiet.setLevel(level)
    original: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
    if getattr(original, _MARK, False):
        return

    def chosen_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        wanted = _CHOSEN.get()
        if wanted is None:
            return original(use_ipv4, use_ipv6)
        keep = []
        for address in wanted:
            version = ipaddress.ip_address(address).version
            if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
                keep.append(address)
        return keep

    setattr(chosen_host_addresses, _MARK, True)
    aioice.ice.get_host_addresses = chosen_host_addresses


@contextlib.contextmanager
def use_host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """Inside the block, ICE gathering offers exactly ``addresses`` (empty: aioice default)."""
    install()
    token = _CHOSEN.set(tuple(addresses) if addresses else None)
    try:
        yield
    finally:
        _CHOSEN.reset(token)
