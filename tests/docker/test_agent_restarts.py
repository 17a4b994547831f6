"""Restart policy, CrashLoopBackOff and probes on a real Docker Engine."""

from __future__ import annotations

import docker
import pytest
from fleetlet.agent.runtime import LABEL_UID

from .conftest import AgentFactory, wait_until, workload

pytestmark = pytest.mark.docker


async def test_crash_loop_reports_exit_code_and_growing_backoff(
    make_agent: AgentFactory, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    agent = make_agent()
    spec = workload("crashy", [{"name": "main", "image": busybox_image, "command": ["sh", "-c", "exit 3"]}])
    await agent.apply(spec)

    backoffs: list[float] = []

    def observe() -> bool:
        report = agent.reconciler.report(spec.uid)
        c = report.containers[0]
        if c.state == "CrashLoopBackOff" and c.backoff_seconds and c.backoff_seconds not in backoffs:
            backoffs.append(c.backoff_seconds)
        return report.restarts >= 4

    await wait_until(observe, what="four restarts")
    report = agent.reconciler.report(spec.uid)
    assert report.exit_code == 3
    assert report.containers[0].exit_code == 3
    # Backoff doubles: 0.3, 0.6, 1.2 ... (the first restart is immediate).
    assert len(backoffs) >= 2 and backoffs == sorted(backoffs) and backoffs[1] > backoffs[0]
    await wait_until(
        lambda: agent.reconciler.report(spec.uid).state == "CrashLoopBackOff", what="CrashLoopBackOff state"
    )
    wire = agent.reconciler.report(spec.uid).to_wire()
    assert (int(wire.state), wire.exit_code) == (6, 3)  # WorkloadState.BACKOFF
    assert "exit 3" in (wire.message or "")
    # Restarts reuse the one container: no pile of dead ones.
    assert len(docker_client.containers.list(all=True, filters={"label": f"{LABEL_UID}={spec.uid}"})) == 1


@pytest.mark.parametrize(("policy", "restarts"), [("Never", False), ("OnFailure", True)])
async def test_restart_policy_on_failure_and_never(
    make_agent: AgentFactory, busybox_image: str, policy: str, restarts: bool
) -> None:
    agent = make_agent()
    ok = workload("ok", [{"name": "m", "image": busybox_image, "command": ["true"]}], restart_policy=policy)
    bad = workload(
        "bad", [{"name": "m", "image": busybox_image, "command": ["false"]}], restart_policy=policy
    )
    await agent.apply(ok, bad)
    await wait_until(
        lambda: agent.reconciler.report(ok.uid).state == "Terminated", what="exit-0 container terminated"
    )
    if restarts:
        await wait_until(lambda: agent.reconciler.report(bad.uid).restarts >= 2, what="failing one restarted")
    else:
        await wait_until(
            lambda: agent.reconciler.report(bad.uid).state == "Terminated", what="failing terminated"
        )
        await agent.reconciler.wait_pass(5)
        assert agent.reconciler.report(bad.uid).restarts == 0
    assert agent.reconciler.report(ok.uid).restarts == 0
    assert agent.reconciler.report(ok.uid).to_wire().state == 4  # SUCCEEDED
    assert agent.reconciler.report(bad.uid).exit_code == 1


async def test_failing_liveness_probe_restarts_container(
    make_agent: AgentFactory, busybox_image: str
) -> None:
    agent = make_agent()
    # Healthy while /tmp/healthy exists. The first run removes it after a second; the
    # restarted container (same filesystem) finds /tmp/started and stays healthy.
    probe = {"exec": {"command": ["test", "-e", "/tmp/healthy"]}, "periodSeconds": 0.2, "failureThreshold": 2}
    spec = workload(
        "sick",
        [
            {
                "name": "app",
                "image": busybox_image,
                "command": [
                    "sh",
                    "-c",
                    "echo > /tmp/healthy; if [ -e /tmp/started ]; then exec sleep 3600; fi; "
                    "echo > /tmp/started; sleep 1; busybox rm /tmp/healthy; exec sleep 3600",
                ],
                "livenessProbe": probe,
            }
        ],
    )
    await agent.apply(spec)
    await wait_until(lambda: agent.reconciler.report(spec.uid).state == "Running", what="running")
    await wait_until(lambda: agent.reconciler.report(spec.uid).restarts >= 1, what="liveness restart")
    await wait_until(lambda: agent.reconciler.report(spec.uid).state == "Running", what="running again")
    rec = agent.reconciler.state.workloads[spec.uid].containers["app"]
    # It did not exit by itself: the agent stopped it (SIGTERM via tini, or SIGKILL).
    assert rec.last_exit_code in (137, 143)
    assert rec.last_reason == "Unhealthy"
    assert "liveness probe failed" in rec.last_message
    # Healthy after the restart: the probe passes and no further restart happens.
    await agent.reconciler.wait_pass(15)
    assert agent.reconciler.report(spec.uid).restarts == 1
    assert agent.reconciler.report(spec.uid).state == "Running"


@pytest.mark.parametrize("kind", ["http", "tcp"])
async def test_failing_http_and_tcp_liveness_probes_restart_container(
    make_agent: AgentFactory, busybox_image: str, kind: str
) -> None:
    from tests.fixtures.ports import free_tcp_port

    agent = make_agent()
    port = free_tcp_port()
    serve = f"httpd -f -p 127.0.0.1:{port} -h /www"
    # The first run serves, then breaks: http answers 404 (the file is gone), tcp stops
    # listening. The restarted container (same filesystem) finds /tmp/started and just serves.
    breaker = "busybox rm /www/healthz" if kind == "http" else "kill $pid"
    script = (
        f"mkdir -p /www; echo ok > /www/healthz; if [ -e /tmp/started ]; then exec {serve}; fi; "
        f"echo > /tmp/started; {serve} & pid=$!; sleep 2; {breaker}; exec sleep 3600"
    )
    timing = {"initialDelaySeconds": 0.5, "periodSeconds": 0.2, "failureThreshold": 2}
    probe = (
        {"httpGet": {"path": "/healthz", "port": port}, **timing}
        if kind == "http"
        else {"tcpSocket": {"port": port}, **timing}
    )
    spec = workload(
        f"sick-{kind}",
        [{"name": "app", "image": busybox_image, "command": ["sh", "-c", script], "livenessProbe": probe}],
    )
    await agent.apply(spec)
    await wait_until(lambda: agent.reconciler.report(spec.uid).restarts >= 1, what=f"{kind} liveness restart")
    await wait_until(lambda: agent.reconciler.report(spec.uid).state == "Running", what="running again")
    rec = agent.reconciler.state.workloads[spec.uid].containers["app"]
    assert rec.last_reason == "Unhealthy"
    assert rec.last_exit_code in (137, 143)  # stopped by the agent, not exited by itself
    assert "liveness probe failed" in rec.last_message
    if kind == "http":
        assert "answered 404" in rec.last_message, rec.last_message
    else:
        assert "tcp probe failed" in rec.last_message, rec.last_message
    # The restarted container serves again: the probe passes and no further restart happens.
    await agent.reconciler.wait_pass(15)
    assert agent.reconciler.report(spec.uid).restarts == 1
    assert agent.reconciler.report(spec.uid).state == "Running"


async def test_readiness_probe_gates_ready(make_agent: AgentFactory, busybox_image: str) -> None:
    agent = make_agent()
    from tests.fixtures.ports import free_tcp_port

    port = free_tcp_port()
    spec = workload(
        "gated",
        [
            {
                "name": "web",
                "image": busybox_image,
                # Serves HTTP on loopback only once /tmp/go exists.
                "command": [
                    "sh",
                    "-c",
                    f"mkdir -p /www; echo ok > /www/index.html; "
                    f"while [ ! -e /tmp/go ]; do sleep 0.1; done; exec httpd -f -p 127.0.0.1:{port} -h /www",
                ],
                "readinessProbe": {"httpGet": {"path": "/index.html", "port": port}, "periodSeconds": 0.2},
                "livenessProbe": {"tcpSocket": {"port": port}, "initialDelaySeconds": 30},
            }
        ],
    )
    await agent.apply(spec)
    await wait_until(lambda: agent.reconciler.report(spec.uid).state == "Running", what="running")
    await agent.reconciler.wait_pass(5)
    report = agent.reconciler.report(spec.uid)
    assert not report.ready and report.to_wire().ready is False
    assert "HTTP" in report.containers[0].message or "probe" in report.containers[0].message

    code, _ = await agent.runtime.exec(report.containers[0].container_id, ["sh", "-c", "echo > /tmp/go"])
    assert code == 0
    await wait_until(lambda: agent.reconciler.report(spec.uid).ready, what="ready")
    assert agent.reconciler.report(spec.uid).to_wire().ready is True
    assert agent.reconciler.report(spec.uid).restarts == 0
