"""The registry mirror a gateway offers at registration (``registered`` key 4): the address the
gateway advertises, and the agent's choice (its own --registry-mirror > the offer > none).

No traffic: the route lookup behind a wildcard mirror is a UDP connect() to loopback, which
sends nothing. 192.0.2.7 (RFC 5737 documentation range) only ever appears as a string here.
"""

from __future__ import annotations

from pathlib import Path

from fleetlet.agent.runtime import DockerRuntime, choose_mirror
from fleetlet.gateway.registry_mirror import RegistryMirror, advertised_address
from fleetlet.gateway.wire import MirrorOffer

ELSEWHERE = "192.0.2.7"  # a device not on this host (never contacted)


def test_mirror_on_a_wildcard_is_advertised_at_the_address_the_device_registered_to() -> None:
    # CoAP bound to one address: that is where the device registered.
    assert advertised_address("0.0.0.0:5001", "127.0.0.1", "127.0.0.1") == "127.0.0.1:5001"
    # CoAP on a wildcard too: the gateway's own address on the interface toward the device.
    assert advertised_address("0.0.0.0:5001", "127.0.0.1", "0.0.0.0") == "127.0.0.1:5001"
    assert advertised_address("[::]:5001", "::1", "::1") == "[::1]:5001"


def test_mirror_on_one_address_is_advertised_as_is_unless_a_device_cannot_reach_it() -> None:
    assert advertised_address("127.0.0.1:5001", "127.0.0.1", "0.0.0.0") == "127.0.0.1:5001"
    # Loopback serves only this host: a device elsewhere pulls from the registry itself.
    assert advertised_address("127.0.0.1:5001", ELSEWHERE, "0.0.0.0") is None
    assert advertised_address("[::1]:5001", ELSEWHERE) is None


def test_registry_mirror_offer_names_its_upstream(tmp_path: Path) -> None:
    hub = RegistryMirror("https://registry-1.docker.io", tmp_path, listen="127.0.0.1:5001")
    assert hub.offer_for("127.0.0.1") == MirrorOffer("127.0.0.1:5001", "docker.io")
    assert hub.offer_for(ELSEWHERE) is None
    local = RegistryMirror("http://127.0.0.1:5000", tmp_path, listen="0.0.0.0:5002")
    assert local.offer_for("127.0.0.1", "127.0.0.1") == MirrorOffer("127.0.0.1:5002", "127.0.0.1:5000")


def test_agent_choice_explicit_flag_then_gateway_offer_then_none() -> None:
    offer = MirrorOffer("127.0.0.1:5002", "127.0.0.1:5000")
    assert choose_mirror("127.0.0.1:7000", "docker.io", offer) == ("127.0.0.1:7000", "docker.io")
    assert choose_mirror("127.0.0.1:7000", "index.docker.io", None) == ("127.0.0.1:7000", "docker.io")
    assert choose_mirror(None, "docker.io", offer) == ("127.0.0.1:5002", "127.0.0.1:5000")
    assert choose_mirror(None, "docker.io", MirrorOffer("127.0.0.1:5002", "registry-1.docker.io")) == (
        "127.0.0.1:5002",
        "docker.io",
    )
    assert choose_mirror(None, "docker.io", None) is None
    # Not host:port: ignored rather than turned into a strange image reference.
    for bad in ("127.0.0.1", "127.0.0.1:x", "http://127.0.0.1:5002", "127.0.0.1:5002/v2", ":5002"):
        assert choose_mirror(None, "docker.io", MirrorOffer(bad, "docker.io")) is None, bad
    assert choose_mirror(None, "docker.io", MirrorOffer("127.0.0.1:5002", "")) is None


def test_runtime_follows_each_registration_answer_unless_configured(tmp_path: Path) -> None:
    offer = MirrorOffer("127.0.0.1:5002", "127.0.0.1:5000")
    runtime = DockerRuntime("unix:///nonexistent.sock", data_dir=tmp_path)  # never connects here
    assert runtime.registry_mirror is None
    runtime.offer_mirror(offer)
    assert (runtime.registry_mirror, runtime.mirror_upstream) == ("127.0.0.1:5002", "127.0.0.1:5000")
    runtime.offer_mirror(None)  # the gateway stopped offering one
    assert runtime.registry_mirror is None

    sock = "unix:///nonexistent.sock"
    mine = DockerRuntime(sock, data_dir=tmp_path, registry_mirror="127.0.0.1:7000", mirror_upstream="hub")
    mine.offer_mirror(offer)
    assert (mine.registry_mirror, mine.mirror_upstream) == ("127.0.0.1:7000", "hub")
    mine.offer_mirror(None)
    assert (mine.registry_mirror, mine.mirror_upstream) == ("127.0.0.1:7000", "hub")
