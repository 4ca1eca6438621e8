from __future__ import annotations

import contextlib
import random

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from homeswarm.errors import InvalidArgument
from homeswarm.transports.discovery import Advertisement, MdnsDiscovery, Sighting, parse_bootstrap

SWARM, OTHER = "swabc", "swxyz"
DEV = "12D3KooWDevice"


def test_advert_reveals_no_names_or_ids():
    ad = Advertisement.create(SWARM, DEV, random.Random(1))
    text = repr(ad.properties())
    assert SWARM not in text
    assert DEV not in text


def test_member_recognises_swarm_and_device():
    ad = Advertisement.create(SWARM, DEV, random.Random(2))
    seen = Sighting(Advertisement.from_properties(ad.properties()), ("/ip4/127.0.0.1/tcp/1",))
    assert seen.is_swarm(SWARM)
    assert not seen.is_swarm(OTHER)
    assert seen.device_in(["12D3KooWOther", DEV]) == DEV
    assert seen.device_in(["12D3KooWOther"]) is None
    assert seen.dial_addrs(DEV) == [f"/ip4/127.0.0.1/tcp/1/p2p/{DEV}"]


def test_salt_unlinks_restarts():
    a = Advertisement.create(SWARM, DEV, random.Random(3))
    b = Advertisement.create(SWARM, DEV, random.Random(4))
    assert a.swarm_tag != b.swarm_tag
    assert a.device_tag != b.device_tag


@given(st.dictionaries(st.sampled_from(["v", "s", "h", "d", "x"]), st.binary(max_size=40)))
def test_garbage_records_are_refused_cleanly(props):
    with contextlib.suppress(InvalidArgument):
        Advertisement.from_properties({k.encode(): v for k, v in props.items()})


def test_bootstrap_parsing():
    assert parse_bootstrap(["/ip4/1.2.3.4/tcp/5/p2p/12D3KooWx"]) == [
        ("12D3KooWx", "/ip4/1.2.3.4/tcp/5/p2p/12D3KooWx")
    ]
    for bad in ["/ip4/1.2.3.4/tcp/5", "/p2p/", "/ip4/1.2.3.4/tcp/5/p2p/a/b"]:
        with pytest.raises(InvalidArgument):
            parse_bootstrap([bad])


@pytest.mark.slow
async def test_two_devices_find_each_other_on_loopback():
    rng = random.Random(5)
    a = Advertisement.create(SWARM, "12D3KooWA", rng)
    b = Advertisement.create(SWARM, "12D3KooWB", rng)
    opts = {"addresses": ["127.0.0.1"], "interfaces": ["127.0.0.1"]}
    async with MdnsDiscovery(a, port=4001, **opts) as da, MdnsDiscovery(b, port=4002, **opts):
        with trio.fail_after(10):
            async for seen in da.sightings:
                if seen.device_in(["12D3KooWB"]):
                    break
        assert seen.is_swarm(SWARM)
        assert seen.addrs == ("/ip4/127.0.0.1/tcp/4002",)
