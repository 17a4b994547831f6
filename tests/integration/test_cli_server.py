"""The `fleetlet` CLI against a real `fleetlet server` process (SQLite in a tmp data dir).

One server per module. The CLI runs in-process through click's CliRunner for the happy
paths, and as the real console script for error output, `-w` and Ctrl-C, so what is
checked there is exactly what a user sees in a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from fleetlet.server.cli.main import cli

from tests.fixtures import ServerProcess, free_tcp_port

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class Cluster:
    url: str
    env: dict[str, str]  # FLEETLET_CONFIG pointing at the config the server wrote
    tmp: Path
    fleetlet: str

    def run(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        """The CLI in-process."""
        return CliRunner().invoke(cli, list(args), input=input, env={**self.env, **(env or {})})

    def proc(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """The console script as a real process."""
        return subprocess.run(
            [self.fleetlet, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **self.env, **(env or {})},
        )

    def write(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(text)
        return str(path)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, fleetlet_bin: str) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cli")
    port = free_tcp_port()
    env = {"FLEETLET_CONFIG": str(tmp / "config.yaml"), "FLEETLET_SERVER": "", "FLEETLET_TOKEN": ""}
    proc = ServerProcess(
        [fleetlet_bin, "server", "--data-dir", str(tmp / "data"), "--listen", f"127.0.0.1:{port}"],
        extra_env=env,
        log_dir=tmp / "logs",
        name="fleetlet-server",
    )
    url = f"http://127.0.0.1:{port}"
    proc.start(wait_http=f"{url}/healthz", timeout=60)
    try:
        config = wait_for_config(tmp / "config.yaml")
        assert config["server"] == url and config["token"].startswith("flt_")
        yield Cluster(url, env, tmp, fleetlet_bin)
    finally:
        proc.stop()


def wait_for_config(path: Path, timeout: float = 30.0) -> dict[str, str]:
    """The server starts answering /healthz a moment before it writes the admin config."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            config = yaml.safe_load(path.read_text())
            if isinstance(config, dict) and config.get("token"):
                return config
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server did not write {path}")
        time.sleep(0.05)


def one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    """Assert the kubectl error contract: exit 1, one line on stderr, nothing else, no traceback."""
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.strip("\n").split("\n")
    assert len(lines) == 1, res.stderr
    return lines[0]


WL = """apiVersion: fleetlet.io/v1
kind: Workload
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  runtime: docker
  containers:
    - name: main
      image: localhost:5000/fleetlet/busybox:1
      command: ["sleep", "{sleep}"]
"""


def test_apply_get_describe_delete_round_trip(cluster: Cluster) -> None:
    res = cluster.run("apply", "-f", str(EXAMPLES))
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        "deployment.fleetlet.io/sensor created",
        "deployment.fleetlet.io/web created",
    ]
    again = cluster.run("apply", "-f", str(EXAMPLES / "web.yaml"))
    assert again.stdout.strip() == "deployment.fleetlet.io/web unchanged"

    table = cluster.run("get", "deploy")
    assert table.exit_code == 0, table.output
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "MODE", "READY", "UP-TO-DATE", "AGE"]
    assert sorted(r.split()[:2] for r in rows) == [["sensor", "EveryDevice"], ["web", "Replicas"]]

    as_json = json.loads(cluster.run("get", "deployments", "web", "-o", "json").stdout)
    assert as_json["kind"] == "Deployment" and as_json["metadata"]["name"] == "web"
    assert as_json["spec"]["template"]["spec"]["containers"][0]["command"] == ["httpd", "-f", "-p", "8081"]
    as_yaml = yaml.safe_load(cluster.run("get", "deploy", "-o", "yaml").stdout)
    assert as_yaml["kind"] == "List"
    assert {i["metadata"]["name"] for i in as_yaml["items"]} == {"sensor", "web"}
    names = cluster.run("get", "deploy", "-o", "name").stdout.split()
    assert sorted(names) == ["deployment.fleetlet.io/sensor", "deployment.fleetlet.io/web"]

    # An Event about the deployment shows up in describe.
    event = cluster.write(
        "event.yaml",
        """apiVersion: fleetlet.io/v1
kind: Event
metadata: {name: web.rollout1}
involvedObject: {kind: Deployment, name: web, namespace: default}
reason: RolloutStarted
message: wave 1 of 2
type: Normal
count: 1
source: {component: deployment-controller}
""",
    )
    assert cluster.run("apply", "-f", event).exit_code == 0
    text = cluster.run("describe", "deploy", "web").stdout
    assert re.search(r"^Name:\s+web$", text, re.M)
    assert re.search(r"^Namespace:\s+default$", text, re.M)
    assert "image:  localhost:5000/fleetlet/busybox:1" in text
    event_line = next(line for line in text.splitlines() if "RolloutStarted" in line)
    assert event_line.split()[:2] == ["Normal", "RolloutStarted"]
    assert "deployment-controller" in event_line and "wave 1 of 2" in event_line

    deleted = cluster.run("delete", "deploy", "web", "sensor")
    assert deleted.exit_code == 0, deleted.output
    assert deleted.stdout.splitlines() == [
        'deployment.fleetlet.io "web" deleted',
        'deployment.fleetlet.io "sensor" deleted',
    ]
    gone = cluster.proc("get", "deploy", "web")
    assert one_error_line(gone) == 'Error from server (NotFound): deployments "web" not found'


def test_delete_foreground_sets_the_finalizer(cluster: Cluster) -> None:
    f = cluster.write("fg.yaml", "apiVersion: fleetlet.io/v1\nkind: ConfigMap\nmetadata: {name: fg}\n")
    assert cluster.run("apply", "-f", f).exit_code == 0
    res = cluster.run("delete", "cm", "fg", "--cascade", "foreground")
    assert res.stdout.strip() == 'configmap.fleetlet.io "fg" deleted'
    after = cluster.run("get", "cm", "fg", "-o", "json")
    if after.exit_code == 0:  # still there until the garbage collector drops the finalizer
        meta = json.loads(after.stdout)["metadata"]
        assert meta.get("deletionTimestamp") and "foregroundDeletion" in meta.get("finalizers", [])
    else:
        assert "NotFound" in after.stderr


def test_apply_updates_and_three_way_merge(cluster: Cluster) -> None:
    f = cluster.write(
        "cm.yaml",
        "apiVersion: fleetlet.io/v1\nkind: ConfigMap\n"
        "metadata: {name: cfg, labels: {a: '1', b: '2'}}\ndata: {x: '1', y: '2'}\n",
    )
    assert cluster.run("apply", "-f", f).stdout.strip() == "configmap.fleetlet.io/cfg created"
    # Someone else adds a label; the user changes data and drops label b and key y.
    assert cluster.proc("get", "cm", "cfg").returncode == 0
    f2 = cluster.write(
        "cm.yaml",
        "apiVersion: fleetlet.io/v1\nkind: ConfigMap\n"
        "metadata: {name: cfg, labels: {a: '1'}}\ndata: {x: '3'}\n",
    )
    assert cluster.run("apply", "-f", f2).stdout.strip() == "configmap.fleetlet.io/cfg configured"
    live = json.loads(cluster.run("get", "cm", "cfg", "-o", "json").stdout)
    assert live["data"] == {"x": "3"}
    assert live["metadata"]["labels"] == {"a": "1"}
    assert cluster.run("apply", "-f", f2).stdout.strip() == "configmap.fleetlet.io/cfg unchanged"
    # delete -f removes what the file names.
    res = cluster.run("delete", "-f", f2)
    assert res.stdout.strip() == 'configmap.fleetlet.io "cfg" deleted'


def test_namespaces_selectors_and_stdin(cluster: Cluster) -> None:
    docs = "\n---\n".join(
        [
            "apiVersion: fleetlet.io/v1\nkind: Namespace\nmetadata: {name: team-a}",
            WL.format(name="w1", app="red", sleep=1).replace("name: w1", "name: w1\n  namespace: team-a"),
            WL.format(name="w2", app="blue", sleep=2),
        ]
    )
    res = cluster.run("apply", "-f", "-", input=docs)
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        "namespace.fleetlet.io/team-a created",
        "workload.fleetlet.io/w1 created",
        "workload.fleetlet.io/w2 created",
    ]
    everywhere = cluster.run("get", "wl", "-A").stdout.splitlines()
    assert everywhere[0].split()[:3] == ["NAMESPACE", "NAME", "STATUS"]
    assert {tuple(r.split()[:2]) for r in everywhere[1:]} >= {("team-a", "w1"), ("default", "w2")}
    default_only = cluster.run("get", "wl").stdout
    assert "w2" in default_only and "w1" not in default_only
    red = cluster.run("get", "wl", "-A", "-l", "app=red", "-o", "name").stdout.split()
    assert red == ["workload.fleetlet.io/w1"]
    by_field = cluster.run("get", "workloads", "-n", "team-a", "--field-selector", "metadata.name=w1")
    assert [r.split()[0] for r in by_field.stdout.splitlines()[1:]] == ["w1"]
    empty = cluster.run("get", "wl", "-n", "team-a", "-l", "app=none")
    assert empty.exit_code == 0 and empty.stderr.strip() == "No resources found in team-a namespace."
    mismatch = cluster.run("apply", "-n", "other", "-f", "-", input=docs)
    assert mismatch.exit_code == 1
    assert 'does not match the namespace "other"' in mismatch.stderr


def test_watch_prints_changes_and_ctrl_c_exits_quietly(cluster: Cluster) -> None:
    f = cluster.write(
        "watched.yaml",
        "apiVersion: fleetlet.io/v1\nkind: ConfigMap\n"
        "metadata: {name: watched, labels: {w: '1'}}\ndata: {v: '1'}\n",
    )
    assert cluster.run("apply", "-f", f).exit_code == 0
    proc = subprocess.Popen(
        [cluster.fleetlet, "get", "cm", "-l", "w=1", "-w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **cluster.env},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert lines.get(timeout=30).split()[:2] == ["NAME", "DATA"]
        assert lines.get(timeout=30).split()[0] == "watched"
        # A change made by someone else appears as a new row.
        created = cluster.run(
            "apply",
            "-f",
            cluster.write(
                "new.yaml",
                "apiVersion: fleetlet.io/v1\n"
                "kind: ConfigMap\nmetadata: {name: appeared, labels: {w: '1'}}\ndata: {a: '1', b: '2'}\n",
            ),
        )
        assert created.exit_code == 0
        assert lines.get(timeout=30).split()[:2] == ["appeared", "2"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    assert "Traceback" not in proc.stderr.read()


def test_token_create_viewer_is_read_only(cluster: Cluster) -> None:
    res = cluster.proc("token", "create", "--role", "viewer", "--ttl", "1h")
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip()
    assert re.fullmatch(r"flt_[a-z0-9]+_[0-9a-f]+", token), token
    viewer = {"FLEETLET_TOKEN": token}
    assert cluster.proc("get", "wl", env=viewer).returncode == 0
    f = cluster.write("viewer.yaml", "apiVersion: fleetlet.io/v1\nkind: ConfigMap\nmetadata: {name: v}\n")
    line = one_error_line(cluster.proc("apply", "-f", f, env=viewer))
    assert line.startswith("Error from server (Forbidden): ")
    tokens = cluster.run("get", "tokens").stdout
    assert token.split("_")[1] in tokens and "viewer" in tokens
    view = cluster.run("config", "view", env=viewer).stdout
    assert token not in view and f"flt_{token.split('_')[1]}_REDACTED" in view


def test_version_and_health(cluster: Cluster) -> None:
    res = cluster.proc("version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith("Client Version: ")
    assert res.stdout.splitlines()[1].startswith("Server Version: ")


# ---- every user mistake: one line on stderr, exit 1, no traceback -----------------------------


def test_connection_refused(cluster: Cluster) -> None:
    port = free_tcp_port()
    line = one_error_line(cluster.proc("--server", f"127.0.0.1:{port}", "get", "wl"))
    assert line == (
        f"error: cannot reach the fleetlet server at http://127.0.0.1:{port}: "
        "connection refused; is `fleetlet server` running?"
    )


def test_not_found(cluster: Cluster) -> None:
    assert one_error_line(cluster.proc("get", "wl", "nope")) == (
        'Error from server (NotFound): workloads "nope" not found'
    )
    assert one_error_line(cluster.proc("delete", "device", "ghost")).startswith(
        "Error from server (NotFound): "
    )


def test_conflict_on_stale_resource_version(cluster: Cluster) -> None:
    f = cluster.write(
        "c409.yaml", "apiVersion: fleetlet.io/v1\nkind: ConfigMap\nmetadata: {name: c409}\ndata: {v: '1'}\n"
    )
    assert cluster.run("apply", "-f", f).exit_code == 0
    stale = yaml.safe_load(cluster.run("get", "cm", "c409", "-o", "yaml").stdout)
    cluster.write(
        "c409.yaml", "apiVersion: fleetlet.io/v1\nkind: ConfigMap\nmetadata: {name: c409}\ndata: {v: '2'}\n"
    )
    assert cluster.run("apply", "-f", f).stdout.strip() == "configmap.fleetlet.io/c409 configured"
    stale["data"] = {"v": "3"}
    stale_file = cluster.write("stale.yaml", yaml.safe_dump(stale))
    line = one_error_line(cluster.proc("apply", "-f", stale_file))
    assert line.startswith("Error from server (Conflict): ")


def test_invalid_object(cluster: Cluster) -> None:
    f = cluster.write(
        "bad.yaml",
        "apiVersion: fleetlet.io/v1\nkind: Workload\nmetadata: {name: bad}\nspec: {runtime: rust}\n",
    )
    line = one_error_line(cluster.proc("apply", "-f", f))
    assert line.startswith('Error from server (Invalid): Workload.fleetlet.io "bad" is invalid: spec.runtime')


def test_malformed_yaml(cluster: Cluster) -> None:
    f = cluster.write("broken.yaml", "apiVersion: fleetlet.io/v1\nkind: Workload\nmetadata:\n  name: [x\n")
    line = one_error_line(cluster.proc("apply", "-f", f))
    assert re.fullmatch(rf"error: {re.escape(f)}:\d+: malformed YAML: .+", line), line


def test_missing_kind_names_file_and_document(cluster: Cluster) -> None:
    f = cluster.write("nokind.yaml", WL.format(name="ok", app="a", sleep=1) + "---\nmetadata: {name: x}\n")
    line = one_error_line(cluster.proc("apply", "-f", f))
    assert line == f'error: {f}:13 (document 2): the object has no "kind"'
    # Nothing from the file was applied: the check comes first.
    assert cluster.proc("get", "wl", "ok").returncode == 1


def test_unknown_kind(cluster: Cluster) -> None:
    assert (
        one_error_line(cluster.proc("get", "foo")) == 'error: the server doesn\'t have a resource type "foo"'
    )


def test_bad_token(cluster: Cluster) -> None:
    line = one_error_line(cluster.proc("--token", "flt_nope_0000", "get", "devices"))
    assert line.startswith("error: You must be logged in to the server (Unauthorized)")


def test_server_port_in_use(cluster: Cluster) -> None:
    listen = cluster.url.removeprefix("http://")
    res = subprocess.run(
        [cluster.fleetlet, "server", "--data-dir", str(cluster.tmp / "second"), "--listen", listen],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **cluster.env},
    )
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: cannot serve on {listen}: ")


# ---- the Informer that gateway, scheduler and controllers build on, against the real server ----


async def test_informer_follows_real_changes_across_watch_reconnects(cluster: Cluster) -> None:
    from fleetlet.server.client import ApiClient, ClientConfig, Informer

    config = ClientConfig.load(config_path=cluster.env["FLEETLET_CONFIG"], server=cluster.url)
    seen: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()

    def record(kind: str) -> Callable[..., None]:
        def handler(*objs: dict[str, Any]) -> None:
            new = objs[-1]
            seen.put_nowait((kind, new["metadata"]["name"], (new.get("data") or {}).get("v", "")))

        return handler

    async with ApiClient.from_config(config) as api:
        await api.create(cm("pre", "0"))
        watches = 0
        real_watch = api.watch

        def counting_watch(*args: Any, **kwargs: Any) -> Any:
            nonlocal watches
            watches += 1
            return real_watch(*args, **kwargs)

        api.watch = counting_watch  # type: ignore[method-assign]
        informer = Informer(
            api,
            "configmaps",
            "default",
            label_selector="inf=1",
            on_add=record("add"),
            on_update=record("update"),
            on_delete=record("delete"),
            watch_timeout_seconds=1,  # the server ends each stream after 1s: exercise the resume path
        )
        task = asyncio.create_task(informer.run())
        try:
            assert await asyncio.wait_for(seen.get(), 30) == ("add", "pre", "0")
            await api.create(cm("live", "1"))
            assert await asyncio.wait_for(seen.get(), 30) == ("add", "live", "1")
            await asyncio.sleep(2.5)  # let at least one stream end and resume (not a timing assertion)
            await api.patch("cm", "live", {"data": {"v": "2"}}, "default")
            assert await asyncio.wait_for(seen.get(), 30) == ("update", "live", "2")
            await api.delete("cm", "live", "default")
            assert await asyncio.wait_for(seen.get(), 30) == ("delete", "live", "2")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert set(informer.cache) == {"default/pre"}
        assert watches >= 2  # the stream did end and the informer reconnected
        assert informer.relists == 1  # ... resuming from the last resourceVersion, never relisting


def cm(name: str, v: str) -> dict[str, Any]:
    return {
        "apiVersion": "fleetlet.io/v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "labels": {"inf": "1"}},
        "data": {"v": v},
    }
