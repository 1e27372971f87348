"""ICE settings: chosen host candidates only inside our gathering, no public STUN."""

from __future__ import annotations

import asyncio
import logging

import aioice.ice
import numpy as np
import pytest

from monitor.media import MediaParams, MediaReceiver
from monitor.media_ice import IceConfig, install, use_host_addresses
from signals.consent import Consent
from signals.errors import ConfigError

from .analyzers import DarkVideo
from .peers import GeneratedVideo, connect_client


def test_chosen_addresses_apply_only_inside_the_block() -> None:
    install()
    install()  # idempotent: wrapped once
    default = aioice.ice.get_host_addresses(True, False)
    assert "127.0.0.1" not in default  # aioice leaves loopback out
    with use_host_addresses(["127.0.0.1", "::1"]):
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(False, True) == ["::1"]
        with use_host_addresses([]):  # empty: aioice's own choice
            assert aioice.ice.get_host_addresses(True, False) == default
    assert aioice.ice.get_host_addresses(True, False) == default


def test_no_public_stun_by_default() -> None:
    assert IceConfig().rtc_configuration().iceServers == []
    urls = IceConfig(servers=("stun:stun.example.org:3478",)).rtc_configuration().iceServers
    assert [s.urls for s in urls] == ["stun:stun.example.org:3478"]


@pytest.mark.parametrize("value, message", [
    ({"host_addresses": ["not-an-ip"]}, "not an IP address"),
    ({"servers": ["http://example.org"]}, "must start with stun:"),
    ({"host_addresses": "127.0.0.1"}, "must be a list"),
    ({"hosts": []}, "unknown ICE setting"),
])
def test_bad_ice_settings_are_clear_errors(value: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        IceConfig.from_dict(value)


def test_ice_settings_from_config() -> None:
    ice = IceConfig.from_dict({"host_addresses": ["127.0.0.1"], "servers": []})
    assert ice == IceConfig(("127.0.0.1",), ())
    assert IceConfig.from_dict(None) == IceConfig()


async def test_the_peers_addresses_stay_out_of_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """aioice logs every connectivity check at INFO with both ends' addresses (the patient's
    IP address and port); ``sessionguard serve`` logs at INFO. A call leaves no such line,
    nor does aiortc's SDP at DEBUG when an embedder runs the root logger at DEBUG."""
    caplog.set_level(logging.DEBUG)
    flowing = asyncio.Event()

    def on_status(kind: str, state: str) -> None:
        if (kind, state) == ("video", "flowing"):
            flowing.set()

    rx = MediaReceiver("s", "p", Consent(frozenset({"video"})),
                       MediaParams(video_factory=DarkVideo), IceConfig(("127.0.0.1",)),
                       on_status=on_status)
    track = GeneratedVideo(lambda _i: np.zeros((120, 160, 3), np.uint8), fps=10)
    pc = await connect_client([track], rx.handle_offer)
    try:
        await asyncio.wait_for(flowing.wait(), 20)
    finally:
        await pc.close()
        await rx.close()
    assert [r.getMessage() for r in caplog.records if "127.0.0.1" in r.getMessage()] == []
