"""`fleetlet agent` over CoAP: register, observe desired state, report, serve logs.

The gateway daemon is written concurrently by another team, so a small aiocoap site stands in
for it here; it speaks the real wire codec (fleetlet.gateway.wire) over real UDP on loopback.
The containers run on the real Docker Engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiocoap
import aiocoap.resource
import docker
import pytest
from aiocoap.numbers import ContentFormat
from fleetlet.agent.runtime import LABEL_GENERATION, LABEL_UID
from fleetlet.agent.session import AgentSession, SessionConfig
from fleetlet.gateway.wire import (
    Container,
    DesiredDoc,
    DockerWorkload,
    Hello,
    LogBatch,
    Probe,
    Registered,
    Report,
    Resources,
    RestartPolicy,
    WorkloadState,
)

from tests.fixtures.ports import free_udp_port

from .conftest import AgentFactory, wait_until

pytestmark = pytest.mark.docker


class _Rd(aiocoap.resource.Resource):  # type: ignore[misc]
    def __init__(self, gw: FakeGateway) -> None:
        super().__init__()
        self.gw = gw

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        self.gw.hellos.append(Hello.from_cbor(request.payload))
        self.gw.endpoints.append(request.opt.uri_query)
        reg = Registered(lifetime=3600, location="/rd/1")
        return aiocoap.Message(code=aiocoap.CREATED, payload=reg.to_cbor(), content_format=ContentFormat.CBOR)


class _Desired(aiocoap.resource.ObservableResource):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.payload = DesiredDoc(gen=0).to_cbor()

    def set(self, doc: DesiredDoc) -> None:
        self.payload = doc.to_cbor()
        self.updated_state()

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        etag = hashlib.sha256(self.payload).digest()[:8]
        if etag in request.opt.etags:
            return aiocoap.Message(code=aiocoap.VALID, etag=etag)
        return aiocoap.Message(payload=self.payload, etag=etag, content_format=ContentFormat.CBOR)


class _Sink(aiocoap.resource.Resource):  # type: ignore[misc]
    def __init__(self, into: list[bytes]) -> None:
        super().__init__()
        self.into = into

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        self.into.append(request.payload)
        return aiocoap.Message(code=aiocoap.CHANGED)


@dataclass
class FakeGateway:
    port: int
    ctx: Any = None
    hellos: list[Hello] = field(default_factory=list)
    endpoints: list[Any] = field(default_factory=list)
    reports: list[bytes] = field(default_factory=list)
    logs: list[bytes] = field(default_factory=list)
    desired: _Desired = field(default_factory=_Desired)

    def last_report(self) -> Report | None:
        return Report.from_cbor(self.reports[-1]) if self.reports else None


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    gw = FakeGateway(free_udp_port())
    site = aiocoap.resource.Site()
    site.add_resource(["rd"], _Rd(gw))
    site.add_resource(["d", "pi-1", "desired"], gw.desired)
    site.add_resource(["d", "pi-1", "report"], _Sink(gw.reports))
    site.add_resource(["d", "pi-1", "logs"], _Sink(gw.logs))
    gw.ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", gw.port))
    yield gw
    await gw.ctx.shutdown()


def _doc(gen: int, image: str, command: tuple[str, ...]) -> DesiredDoc:
    main = Container(
        name="main",
        image=image,
        command=command,
        env={"GREETING": "hello", "DB_PASSWORD": "from-a-secret"},  # the gateway resolves secrets
        resources=Resources(memory=48 * 1024 * 1024, cpu=250),
        liveness=Probe(exec=("true",), period=1),
    )
    wl = DockerWorkload(
        uid="5e551011-0000-4000-8000-00000000abcd",
        name="default/echo",
        generation=gen,
        restart_policy=RestartPolicy.ALWAYS,
        containers=(main,),
    )
    return DesiredDoc(gen=gen, workloads=(wl,))


async def test_agent_registers_observes_desired_reports_and_serves_logs(
    make_agent: AgentFactory, gateway: FakeGateway, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    agent = make_agent()
    agent_port = free_udp_port()
    session = AgentSession(
        SessionConfig(
            device="pi-1",
            gateway=f"coap://127.0.0.1:{gateway.port}",
            token=b"device-secret",
            report_interval=0.5,
            poll_interval=60.0,  # so every update must arrive by Observe
            retry=0.2,
            bind=("127.0.0.1", agent_port),
        ),
        agent.reconciler,
        boot_count=3,
    )
    task = asyncio.create_task(session.run())
    try:
        await wait_until(lambda: bool(gateway.hellos), what="registration")
        hello = gateway.hellos[0]
        assert hello.token == b"device-secret" and hello.boot_count == 3
        assert [str(r) for r in hello.runtimes] == ["docker"] and hello.mem_free > 0
        assert "ep=pi-1" in gateway.endpoints[0]

        gateway.desired.set(
            _doc(1, busybox_image, ("sh", "-c", "echo line-one; echo line-two >&2; exec sleep 3600"))
        )

        def running(gen: int) -> bool:
            rep = gateway.last_report()
            return bool(
                rep
                and rep.gen == gen
                and rep.workloads
                and rep.workloads[0].state == WorkloadState.RUNNING
                and rep.workloads[0].generation == gen
            )

        await wait_until(lambda: running(1), what="report of the running workload")

        # What came over the wire is what the engine runs: labels, env, limits.
        uid = "5e551011-0000-4000-8000-00000000abcd"
        (ctr,) = docker_client.containers.list(all=True, filters={"label": f"{LABEL_UID}={uid}"})
        assert ctr.labels[LABEL_UID] == uid and ctr.labels[LABEL_GENERATION] == "1"
        env = ctr.attrs["Config"]["Env"]
        assert "GREETING=hello" in env and "DB_PASSWORD=from-a-secret" in env
        assert ctr.attrs["HostConfig"]["Memory"] == 48 * 1024 * 1024
        assert ctr.attrs["HostConfig"]["NanoCpus"] == 250_000_000
        assert all("from-a-secret" not in v for v in ctr.labels.values())

        # Per-container CPU and memory use travel in the workload's container statuses (CPU
        # needs two samples, so the first reports may lack it).
        def has_usage() -> bool:
            rep = gateway.last_report()
            if not rep or not rep.workloads or not rep.workloads[0].containers:
                return False
            (c,) = rep.workloads[0].containers
            return c.cpu is not None and c.memory is not None

        await wait_until(has_usage, what="container usage in a report")
        rep = gateway.last_report()
        assert rep is not None
        (c,) = rep.workloads[0].containers
        assert c.name == "main" and c.state == WorkloadState.RUNNING
        assert c.memory is not None and c.memory > 0
        assert c.cpu is not None and c.cpu >= 0
        assert not rep.metrics  # no longer duplicated there

        # Logs on demand: the gateway GETs them from the agent's own endpoint.
        batch = await session.log_batch(uid, "main", 10)
        assert batch is not None
        # Two pipes: docker stamps each line as it reads it, so the cross-stream order may vary.
        assert {(ln.text, int(ln.stream)) for ln in batch.lines} == {("line-one", 0), ("line-two", 1)}
        assert [ln.t for ln in batch.lines] == sorted(ln.t for ln in batch.lines)
        client = await aiocoap.Context.create_client_context()
        try:
            addr = f"127.0.0.1:{agent_port}"
            resp = await client.request(
                aiocoap.Message(code=aiocoap.GET, uri=f"coap://{addr}/l?uid={uid}&c=main&n=1")
            ).response
            got = LogBatch.from_cbor(resp.payload)
            # n=1 is the last line docker wrote (file order, which may differ from stamp order).
            assert len(got.lines) == 1 and got.lines[0].text in ("line-one", "line-two")
            missing = await client.request(
                aiocoap.Message(code=aiocoap.GET, uri=f"coap://{addr}/l?uid=nope&c=main")
            ).response
            assert missing.code == aiocoap.NOT_FOUND
        finally:
            await client.shutdown()
        assert await session.push_logs(uid, "main", 5) == 2
        assert LogBatch.from_cbor(gateway.logs[-1]).container == "main"

        # A new desired generation arrives by Observe and is applied and reported.
        gateway.desired.set(_doc(2, busybox_image, ("sh", "-c", "exit 4")))
        await wait_until(
            lambda: bool(
                (rep := gateway.last_report())
                and rep.gen == 2
                and rep.workloads[0].exit_code == 4
                and rep.workloads[0].restarts >= 1
            ),
            what="report of the crash-looping generation 2",
        )
        # An empty desired document removes the workload.
        gateway.desired.set(DesiredDoc(gen=3))
        await wait_until(
            lambda: bool((rep := gateway.last_report()) and rep.gen == 3 and not rep.workloads),
            what="workload removed",
        )
        assert not agent.reconciler.actual
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
