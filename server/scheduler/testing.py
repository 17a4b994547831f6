"""Builders of Device, Gateway and Workload manifests, for tests and the benchmark."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .objects import PLATFORMS_ANNOTATION, Obj

API_VERSION = "fleetlet.io/v1"


def make_gateway(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, str]] = (),
    unschedulable: bool = False,
    ready: bool = True,
) -> Obj:
    spec: Obj = {}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": API_VERSION,
        "kind": "Gateway",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def make_device(
    name: str,
    gateway: str,
    *,
    board: str | None = None,
    arch: str | None = "arm64",
    runtimes: Sequence[str] | None = ("docker",),
    memory: str | None = "1Gi",
    cpu: str | None = "2",
    flash: str | None = "8Gi",
    allocatable: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, str]] = (),
    unschedulable: bool = False,
    phase: str = "Online",
) -> Obj:
    spec: Obj = {"gateway": gateway}
    if board is not None:
        spec["board"] = board
    if arch is not None:
        spec["arch"] = arch
    if runtimes is not None:
        spec["runtimes"] = list(runtimes)
    capacity = {k: v for k, v in (("memory", memory), ("cpu", cpu), ("flash", flash)) if v is not None}
    if capacity:
        spec["capacity"] = capacity
    if allocatable is not None:
        spec["allocatable"] = dict(allocatable)
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": API_VERSION,
        "kind": "Device",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": spec,
        "status": {"phase": phase},
    }


def make_workload(
    name: str,
    namespace: str = "default",
    *,
    runtime: str = "docker",
    memory: str | None = None,
    cpu: str | None = None,
    flash: str | None = None,
    container_requests: Sequence[Mapping[str, str]] = (),
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, str]] = (),
    platforms: Sequence[str] = (),
    priority: int | None = None,
    labels: Mapping[str, str] | None = None,
    device_name: str | None = None,
    resource_version: str | None = None,
) -> Obj:
    spec: Obj = {"runtime": runtime}
    if runtime == "docker":
        containers: list[Obj] = []
        for i, req in enumerate(container_requests or [{}]):
            c: Obj = {"name": f"c{i}", "image": "busybox:latest"}
            if req:
                c["resources"] = {"requests": dict(req)}
            containers.append(c)
        spec["containers"] = containers
    else:
        module = {"name": "main.py", "source": "async def main(ctx): pass"}
        spec["app"] = {"entry": "main", "modules": [module]}
    requests = {k: v for k, v in (("memory", memory), ("cpu", cpu), ("flash", flash)) if v is not None}
    if requests:
        spec["resources"] = {"requests": requests}
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if priority is not None:
        spec["priority"] = priority
    if device_name is not None:
        spec["deviceName"] = device_name
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if platforms:
        meta["annotations"] = {PLATFORMS_ANNOTATION: ",".join(platforms)}
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    return {"apiVersion": API_VERSION, "kind": "Workload", "metadata": meta, "spec": spec}
