"""Deployment controller against the real API: Replicas and EveryDevice placement, rollout
through waves, pause and resume, undo, and automatic rollback of a failing wave."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fleetlet.server.client import strip_for_write
from fleetlet.server.controllers.rollout import REVISION_LABEL, ROLLED_BACK_FROM, template_hash, undo_template

from tests.integration.test_controllers_harness import NS, Env, controller_env, deployment, eventually

Obj = dict[str, Any]


def cond(obj: Obj, ctype: str) -> Obj:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


async def set_image(env: Env, name: str, image: str, **spec: Any) -> str:
    dep = await env.deploy(name)
    template = dep["spec"]["template"]
    template["spec"]["containers"][0]["image"] = image
    await env.client.patch("deployments", name, {"spec": {"template": template, **spec}}, NS)
    return template_hash((await env.deploy(name))["spec"]["template"])


async def all_on(env: Env, name: str, rev: str, n: int) -> bool:
    dep = await env.deploy(name)
    st = dep.get("status") or {}
    return (
        (await env.revisions(name)) == {rev: n}
        and st.get("currentRevision") == rev
        and st.get("availableReplicas") == n
    )


async def test_replicas_create_and_scale(tmp_path: Path) -> None:
    async with controller_env(tmp_path) as env:
        await env.fleet.add_gateway()
        for d in ("d1", "d2"):
            await env.fleet.add_device(d)
        env.fleet.start()
        dep = await env.client.create(deployment("web", replicas=3), NS)
        wls = await eventually(lambda: _n(env, "web", 3), "3 workloads")
        for w in wls:
            ref = w["metadata"]["ownerReferences"][0]
            assert ref["uid"] == dep["metadata"]["uid"] and ref["controller"] is True
            assert w["metadata"]["labels"]["fleetlet.io/deployment"] == "web"
            assert w["metadata"]["name"].startswith("web-")
        await eventually(lambda: _ready(env, "web", 3), "3 ready")
        st = (await env.deploy("web"))["status"]
        assert cond(await env.deploy("web"), "Available")["status"] == "True"
        assert st["updatedReplicas"] == 3 and st["currentRevision"] == st["updateRevision"]

        await env.client.patch("deployments", "web", {"spec": {"placement": {"replicas": 5}}}, NS)
        await eventually(lambda: _n(env, "web", 5), "scaled to 5")
        await env.client.patch("deployments", "web", {"spec": {"placement": {"replicas": 2}}}, NS)
        await eventually(lambda: _n(env, "web", 2), "scaled to 2")
        await eventually(lambda: _ready(env, "web", 2), "2 ready")
        # Stays at 2: nothing flaps once converged.
        before = {w["metadata"]["uid"] for w in await env.workloads("web")}
        await asyncio.sleep(0.5)
        assert {w["metadata"]["uid"] for w in await env.workloads("web")} == before
        created = await env.events("SuccessfulCreate", NS)
        assert created and created[0]["involvedObject"]["name"] == "web"


async def _n(env: Env, name: str, n: int) -> list[Obj] | None:
    wls = await env.workloads(name)
    return wls if len(wls) == n else None


async def _ready(env: Env, name: str, n: int) -> bool:
    st = (await env.deploy(name)).get("status") or {}
    return st.get("readyReplicas") == n and st.get("availableReplicas") == n


async def test_every_device_follows_devices(tmp_path: Path) -> None:
    async with controller_env(tmp_path) as env:
        await env.fleet.add_gateway(labels={"site": "lab"})
        await env.fleet.add_device("a1", {"zone": "a"})
        await env.fleet.add_device("a2", {"zone": "a"})
        await env.fleet.add_device("b1", {"zone": "b"})
        await env.client.create(
            deployment("agent", mode="EveryDevice", node_selector={"zone": "a", "site": "lab"}), NS
        )

        async def placed() -> dict[str, str]:
            return {
                w["spec"].get("deviceName", ""): w["metadata"]["uid"] for w in await env.workloads("agent")
            }

        await eventually(lambda: _eq(placed(), {"a1", "a2"}), "one workload on each zone-a device")
        wls = await env.workloads("agent")
        assert all(w["spec"]["gatewayName"] == "gw1" for w in wls), "pre-bound like DaemonSet pods"
        first = await placed()

        await env.fleet.add_device("a3", {"zone": "a"})  # joins
        await eventually(lambda: _eq(placed(), {"a1", "a2", "a3"}), "a workload on the new device")
        await env.client.patch("devices", "a2", {"metadata": {"labels": {"zone": "b"}}})  # relabeled away
        await eventually(lambda: _eq(placed(), {"a1", "a3"}), "workload removed from relabeled device")
        await env.client.patch("devices", "b1", {"metadata": {"labels": {"zone": "a"}}})  # relabeled in
        await eventually(lambda: _eq(placed(), {"a1", "a3", "b1"}), "workload on relabeled-in device")
        await env.client.delete("devices", "a3")  # leaves
        await eventually(lambda: _eq(placed(), {"a1", "b1"}), "workload of deleted device removed")
        assert (await placed())["a1"] == first["a1"], "unaffected devices keep their workload"


async def _eq(got: Any, devices: set[str]) -> bool:
    return set(await got) == devices


async def test_rollout_through_waves_with_min_ready(tmp_path: Path) -> None:
    async with controller_env(tmp_path) as env:
        await env.fleet.add_gateway()
        for d in ("d1", "d2", "d3", "d4"):
            await env.fleet.add_device(d)
        env.fleet.start()
        strategy = {"waves": [1, "50%", "100%"], "minReadySeconds": 1, "maxUnavailable": 0}
        await env.client.create(deployment("web", replicas=4, strategy=strategy), NS)
        v1 = template_hash((await env.deploy("web"))["spec"]["template"])
        await eventually(lambda: all_on(env, "web", v1, 4), "v1 everywhere")

        v2 = await set_image(env, "web", "nginx:2")
        samples: list[tuple[int, int, int]] = []
        targets: list[int] = []

        async def done() -> bool:
            revs = await env.revisions("web")  # listed before status: waves only move forward
            st = (await env.deploy("web")).get("status") or {}
            if st.get("updateRevision") == v2:
                targets[:] = st["waves"]
                samples.append((st["currentWave"], revs.get(v2, 0), sum(revs.values())))
            return await all_on(env, "web", v2, 4)

        await eventually(done, "v2 everywhere", within=30)
        assert targets == [1, 2, 4]
        waves_seen = {w for w, _, _ in samples}
        assert {1, 2, 3} <= waves_seen, f"the rollout should pass through every wave: {samples}"
        for wave, new, _total in samples:
            assert new <= targets[wave - 1], f"wave {wave} may have {targets[wave - 1]} new, saw {new}"
        # minReadySeconds=1 holds wave 1 for at least a second: several samples with one new workload.
        assert sum(1 for w, n, _ in samples if w == 1 and n == 1) >= 5
        # maxUnavailable 0 with surge-first: never fewer than 4 workloads.
        assert min(t for _, _, t in samples) >= 4
        dep = await env.deploy("web")
        assert [h["revision"] for h in dep["status"]["history"]] == [1, 2]
        assert cond(dep, "Progressing")["reason"] == "NewRevisionAvailable"
        assert await env.events("WaveStarted", NS)


async def test_pause_holds_between_waves_and_resume_finishes(tmp_path: Path) -> None:
    async with controller_env(tmp_path) as env:
        await env.fleet.add_gateway()
        for d in ("d1", "d2", "d3"):
            await env.fleet.add_device(d)
        env.fleet.start()
        strategy = {"waves": [1, "100%"], "minReadySeconds": 0, "maxUnavailable": 0}
        await env.client.create(deployment("web", replicas=3, strategy=strategy), NS)
        v1 = template_hash((await env.deploy("web"))["spec"]["template"])
        await eventually(lambda: all_on(env, "web", v1, 3), "v1 everywhere")

        # Paused before the rollout starts: nothing of v2 appears.
        v2 = await set_image(env, "web", "nginx:2", paused=True)
        await asyncio.sleep(0.8)
        assert await env.revisions("web") == {v1: 3}
        dep = await env.deploy("web")
        assert cond(dep, "Progressing")["reason"] == "DeploymentPaused"

        # Resume, then pause as soon as wave 1 is under way: it finishes wave 1 and stops there.
        await env.client.patch("deployments", "web", {"spec": {"paused": False}}, NS)
        await eventually(lambda: _has(env, "web", v2), "wave 1 started")
        await env.client.patch("deployments", "web", {"spec": {"paused": True}}, NS)

        async def wave1_done() -> bool:
            st = (await env.deploy("web")).get("status") or {}
            return st.get("updatedAvailableReplicas") == 1 and (await env.revisions("web")) == {v1: 2, v2: 1}

        await eventually(wave1_done, "wave 1 complete, old replica retired")
        await asyncio.sleep(1.0)
        assert await env.revisions("web") == {v1: 2, v2: 1}, "paused: wave 2 must not start"
        st = (await env.deploy("web"))["status"]
        assert st["currentWave"] == 1 and st["currentRevision"] == v1

        await env.client.patch("deployments", "web", {"spec": {"paused": False}}, NS)
        await eventually(lambda: all_on(env, "web", v2, 3), "resumed rollout completes")


async def _has(env: Env, name: str, rev: str) -> bool:
    return (await env.revisions(name)).get(rev, 0) > 0


async def test_undo_returns_to_the_previous_revision(tmp_path: Path) -> None:
    async with controller_env(tmp_path) as env:
        await env.fleet.add_gateway()
        for d in ("d1", "d2"):
            await env.fleet.add_device(d)
        env.fleet.start()
        await env.client.create(deployment("web", replicas=2, strategy={"maxUnavailable": 1}), NS)
        v1 = template_hash((await env.deploy("web"))["spec"]["template"])
        await eventually(lambda: all_on(env, "web", v1, 2), "v1 everywhere")
        v2 = await set_image(env, "web", "nginx:2")
        await eventually(lambda: all_on(env, "web", v2, 2), "v2 everywhere")

        dep = await env.deploy("web")
        template, revision = undo_template(dep)  # what `fleetlet rollout undo` sends
        assert revision == 1
        body = strip_for_write(dep)
        body["spec"]["template"] = template
        await env.client.replace(body, NS)
        await eventually(lambda: all_on(env, "web", v1, 2), "back on v1")
        history = {h["hash"]: h["revision"] for h in (await env.deploy("web"))["status"]["history"]}
        assert history == {v2: 2, v1: 3}, "an undo moves the old template to a new revision number"


async def test_failing_wave_rolls_back_automatically(tmp_path: Path) -> None:
    async with controller_env(tmp_path) as env:
        await env.fleet.add_gateway()
        for d in ("d1", "d2", "d3", "d4"):
            await env.fleet.add_device(d)
        env.fleet.start()
        strategy = {
            "waves": [1, "50%", "100%"],
            "maxUnavailable": 1,
            "failureThreshold": 0.5,
            "autoRollback": True,
        }
        await env.client.create(deployment("web", replicas=4, strategy=strategy), NS)
        v1 = template_hash((await env.deploy("web"))["spec"]["template"])
        await eventually(lambda: all_on(env, "web", v1, 4), "v1 everywhere")
        good = {w["metadata"]["uid"] for w in await env.workloads("web")}

        bad_samples: list[int] = []

        async def rolled_back() -> bool:
            revs = await env.revisions("web")
            bad_samples.append(sum(n for r, n in revs.items() if r != v1))
            dep = await env.deploy("web")
            return cond(dep, "RolledBack").get("status") == "True" and await all_on(env, "web", v1, 4)

        dep = await env.deploy("web")
        template = dep["spec"]["template"]
        template["spec"]["containers"][0]["image"] = "nginx:bad"
        await env.client.patch("deployments", "web", {"spec": {"template": template}}, NS)
        bad = template_hash(template)
        await eventually(rolled_back, "rolled back to v1", within=30)

        dep = await env.deploy("web")
        assert template_hash(dep["spec"]["template"]) == v1
        assert dep["metadata"]["annotations"][ROLLED_BACK_FROM] == bad
        rb = cond(dep, "RolledBack")
        assert rb["reason"] == "FailureThresholdExceeded"
        assert bad in rb["message"] and "1/1" in rb["message"] and "100%" in rb["message"]
        assert max(bad_samples) <= 1, "only wave 1 (one workload) may ever run the bad revision"
        assert await env.revisions("web") == {v1: 4}
        # maxUnavailable 1 let one old workload go during wave 1; the other three never restarted.
        assert len(good & {w["metadata"]["uid"] for w in await env.workloads("web")}) >= 3
        events = await env.events("RolledBack", NS)
        assert events and events[0]["type"] == "Warning" and events[0]["involvedObject"]["name"] == "web"


async def test_every_device_rollout_in_waves(tmp_path: Path) -> None:
    async with controller_env(tmp_path) as env:
        await env.fleet.add_gateway()
        for d in ("d1", "d2", "d3", "d4"):
            await env.fleet.add_device(d)
        env.fleet.start()
        strategy = {"waves": [1, "100%"], "minReadySeconds": 1, "maxUnavailable": 1}
        await env.client.create(deployment("agent", mode="EveryDevice", strategy=strategy), NS)
        v1 = template_hash((await env.deploy("agent"))["spec"]["template"])
        await eventually(lambda: all_on(env, "agent", v1, 4), "v1 on every device")
        v2 = await set_image(env, "agent", "nginx:2")
        seen: list[tuple[int, int]] = []

        async def done() -> bool:
            revs = await env.revisions("agent")
            st = (await env.deploy("agent")).get("status") or {}
            if st.get("updateRevision") == v2:
                seen.append((st["currentWave"], revs.get(v2, 0)))
            return await all_on(env, "agent", v2, 4)

        await eventually(done, "v2 on every device", within=30)
        assert all(n <= 1 for w, n in seen if w == 1), f"wave 1 is one device: {seen}"
        assert any(w == 2 for w, _ in seen)
        devices = sorted(w["spec"]["deviceName"] for w in await env.workloads("agent"))
        assert devices == ["d1", "d2", "d3", "d4"]
        assert all(w["metadata"]["labels"][REVISION_LABEL] == v2 for w in await env.workloads("agent"))


async def test_rollout_cli_history_status_pause_undo(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from fleetlet.server.cli.main import cli

    async with controller_env(tmp_path) as env:
        await env.fleet.add_gateway()
        await env.fleet.add_device("d1")
        env.fleet.start()
        await env.client.create(deployment("web", replicas=1, strategy={"maxUnavailable": 1}), NS)
        v1 = template_hash((await env.deploy("web"))["spec"]["template"])
        await eventually(lambda: all_on(env, "web", v1, 1), "v1")
        v2 = await set_image(env, "web", "nginx:2")
        await eventually(lambda: all_on(env, "web", v2, 1), "v2")
        runner = CliRunner()
        environ = {
            "FLEETLET_SERVER": env.client.server,
            "FLEETLET_TOKEN": env.client.token or "",
            "FLEETLET_CONFIG": str(tmp_path / "cli.yaml"),
        }

        async def run(*args: str) -> str:
            result = await asyncio.to_thread(runner.invoke, cli, list(args), env=environ)
            assert result.exit_code == 0, result.output
            return str(result.output)

        out = await run("rollout", "history", "deployment/web")
        assert v1 in out and v2 in out and "current template" in out
        out = await run("rollout", "status", "web", "--timeout", "10")
        assert "successfully rolled out" in out
        await run("rollout", "pause", "web")
        assert (await env.deploy("web"))["spec"]["paused"] is True
        await run("rollout", "resume", "web")
        assert (await env.deploy("web"))["spec"]["paused"] is False
        out = await run("rollout", "undo", "web")
        assert "revision 1" in out
        await eventually(lambda: all_on(env, "web", v1, 1), "undone to v1")
        bad = await asyncio.to_thread(
            runner.invoke, cli, ["rollout", "undo", "web", "--to-revision", "9"], env=environ
        )
        assert bad.exit_code != 0 and "revision 9 not found" in bad.output
