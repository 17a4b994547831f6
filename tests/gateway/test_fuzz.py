"""Hypothesis fuzz: random payloads, paths and options through the CoAP resources' render path.

Every answer must be a 2.xx or 4.xx response; no input may raise or produce a 5.xx.
The resources run against a real provider (local SQLite store) with a registered device.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleetlet.gateway import coap
from fleetlet.gateway.coap import Block, Code, Message
from fleetlet.gateway.coap_provider import CoapDeviceProvider
from fleetlet.gateway.coap_server import GatewaySite
from fleetlet.gateway.devices import credential_hash
from fleetlet.gateway.localstore import LocalStore
from fleetlet.gateway.status_sync import StatusSync
from fleetlet.gateway.wire import Hello, Report, Runtime, WorkloadState, WorkloadStatus, decode_value
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


class Writer:
    async def patch_status(self, plural: str, namespace: str | None, name: str, status: Any) -> None:
        return None

    def current_status(self, plural: str, namespace: str | None, name: str) -> Any:
        return None


class NoRefs:
    async def secret(self, namespace: str, name: str) -> Any:
        return None

    async def configmap(self, namespace: str, name: str) -> Any:
        return None


class Harness:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory()
        self.store = self.loop.run_until_complete(LocalStore.open(Path(self.dir.name) / "g.db"))
        self.status = StatusSync(Writer(), self.store)
        self.provider = CoapDeviceProvider(self.store, self.status, NoRefs())
        self.provider.devices.upsert("dev", credential_hash("tok"))
        self.gw = GatewaySite(self.provider)
        hello = Hello("esp32", "1", "xtensawin", (Runtime.MICROPYTHON,), 1, 1, token=b"tok")
        code = self.render(Code.POST, ("rd",), hello.to_cbor(), query=("ep=dev",)).code
        assert code == Code.CREATED

    def render(
        self,
        code: int,
        path: tuple[str, ...],
        payload: bytes = b"",
        query: tuple[str, ...] = (),
        *,
        block2: tuple[int, bool, int] | None = None,
        etags: tuple[bytes | None, ...] = (),
    ) -> Message:
        opts = [(coap.URI_PATH, p.encode()) for p in path] + [(coap.URI_QUERY, q.encode()) for q in query]
        opts += [(coap.ETAG, e) for e in etags if e is not None]
        if block2 is not None:
            opts.append((coap.BLOCK2, Block(*block2).encode()))
        req = Message(code, payload, opts, mid=1, token=b"t", remote=("127.0.0.1", 40000))
        return self.loop.run_until_complete(self._render(req))

    async def _render(self, req: Message) -> Message:
        try:
            answer = self.gw.render(req)
        except coap.FormatError:  # the endpoint answers these 4.00
            return Message(Code.BAD_REQUEST)
        return answer if isinstance(answer, Message) else await answer

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()
        self.dir.cleanup()


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def _ok(resp: Message) -> None:
    assert coap.is_success(resp.code) or resp.code >> 5 == 4, resp


segment = st.text(min_size=0, max_size=12)


@FUZZ
@given(payload=st.binary(max_size=2048))
def test_random_report_payloads(h: Harness, payload: bytes) -> None:
    _ok(h.render(Code.POST, ("d", "dev", "report"), payload))


@FUZZ
@given(payload=st.binary(max_size=2048), ep=st.sampled_from(["dev", "other", "x" * 300, "", "dev/.."]))
def test_random_hello_payloads(h: Harness, payload: bytes, ep: str) -> None:
    _ok(h.render(Code.POST, ("rd",), payload, query=(f"ep={ep}",)))


@FUZZ
@given(payload=st.binary(max_size=512))
def test_random_log_payloads(h: Harness, payload: bytes) -> None:
    _ok(h.render(Code.POST, ("d", "dev", "logs"), payload))


@FUZZ
@given(
    path=st.lists(segment, max_size=4),
    code=st.sampled_from([Code.GET, Code.POST, Code.PUT, Code.DELETE, Code.FETCH]),
    payload=st.binary(max_size=64),
    etag=st.none() | st.binary(min_size=1, max_size=8),
    block=st.none() | st.tuples(st.integers(0, 5000), st.booleans(), st.integers(0, 6)),
)
def test_random_requests(
    h: Harness, path: list[str], code: int, payload: bytes, etag: bytes | None, block: Any
) -> None:
    opts: dict[str, Any] = {}
    if block is not None:
        opts["block2"] = block
    req_path = tuple(path)
    resp = h.render(code, req_path, payload, **opts)
    if etag is not None:
        resp = h.render(Code.GET, ("d", "dev", "desired"), etags=(etag,))
    _ok(resp)


def _values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**64), 2**64 - 1)
        | st.text(max_size=8)
        | st.binary(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.integers(0, 12) | st.text(max_size=3), inner, max_size=5)
        ),
        max_leaves=20,
    )


@FUZZ
@given(obj=st.dictionaries(st.integers(0, 8), _values(), max_size=8))
def test_wrong_types_in_reports(h: Harness, obj: dict[int, Any]) -> None:
    """Well-formed CBOR with wrong shapes: 4.00 (or 2.04 when it happens to be valid)."""
    from fleetlet.gateway.wire import encode_value

    resp = h.render(Code.POST, ("d", "dev", "report"), encode_value(obj, max_size=None))
    _ok(resp)


def test_valid_report_and_desired_with_blocks(h: Harness) -> None:
    report = Report(gen=0, workloads=(WorkloadStatus("u", 1, WorkloadState.RUNNING),))
    assert h.render(Code.POST, ("d", "dev", "report"), report.to_cbor()).code == Code.CHANGED
    full = h.render(Code.GET, ("d", "dev", "desired"))
    assert full.code == Code.CONTENT and decode_value(full.payload)[1] == 0
    assert h.render(Code.GET, ("d", "dev", "desired"), etags=(full.etag,)).code == Code.VALID
    assert h.render(Code.POST, ("d", "dev", "report"), b"\xa0" * 17000).code == Code.REQUEST_ENTITY_TOO_LARGE
