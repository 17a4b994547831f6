"""docker-compose YAML -> one fleetlet Workload (services become its containers).

A compose application maps onto a Workload the way a Pod holds containers: started, updated
and removed together, one restartPolicy. Supported per service: image, command, entrypoint,
environment (list or map), ports, volumes, restart, healthcheck, mem_limit, cpus,
deploy.resources.limits, deploy.restart_policy.condition, working_dir, network_mode
(host/none). Accepted and ignored, with a warning: depends_on (all containers start
together, as in a Pod; there is no ordering), container_name (names are the agent's),
expose (host networking exposes every port), labels, version.

Values are interpolated as compose does, from the environment of the shell running
``fleetlet apply``: ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
``${VAR:?message}``, ``${VAR?message}``; ``$$`` is a literal ``$`` (for the container's shell).

Anything else is rejected in one ComposeError that lists every unsupported key per service,
e.g. ``docker-compose.yml: service "web": unsupported keys: build, networks``, so the user
fixes the file in one go. Extension keys (``x-*``) are ignored, as compose itself does.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ComposeError",
    "ComposeResult",
    "compose_to_workload",
    "convert_compose",
    "is_compose",
    "project_name",
]

log = logging.getLogger(__name__)

API_VERSION = "fleetlet.io/v1"

_TOP_SUPPORTED = {"version", "services", "volumes", "name"}
_SERVICE_SUPPORTED = {
    "image",
    "command",
    "entrypoint",
    "environment",
    "ports",
    "volumes",
    "restart",
    "healthcheck",
    "mem_limit",
    "cpus",
    "deploy",
    "working_dir",
    "network_mode",
}
_SERVICE_IGNORED = {"depends_on", "container_name", "expose", "labels"}
_DEPLOY_SUPPORTED = {"resources", "restart_policy"}
_RESTART = {"no": "Never", "always": "Always", "on-failure": "OnFailure", "unless-stopped": "Always"}
_RESTART_CONDITION = {"none": "Never", "on-failure": "OnFailure", "any": "Always"}
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ComposeError(ValueError):
    """A compose file fleetlet cannot turn into a Workload; the message lists every problem."""


@dataclass
class ComposeResult:
    workload: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def is_compose(doc: Any) -> bool:
    """True for a parsed compose document (``services:`` and no Kubernetes ``kind``)."""
    return isinstance(doc, dict) and "services" in doc and "kind" not in doc


def project_name(path: str) -> str:
    """compose's default project name: the folder holding the file, as a DNS label."""
    folder = Path(os.path.abspath(path)).parent.name if path not in ("", "-") else "compose"
    return _label(folder) or "compose"


def compose_to_workload(
    text: str | Mapping[str, Any],
    name: str | None = None,
    namespace: str | None = None,
    source: str = "docker-compose.yml",
) -> dict[str, Any]:
    """The Workload manifest for compose ``text`` (YAML, or an already parsed document).

    Warnings are logged; problems raise ComposeError. Without ``namespace`` the manifest has
    none, so the CLI's namespace rules (``-n``, the context's default) apply.
    """
    result = convert_compose(text, name=name, namespace=namespace, source=source)
    for warning in result.warnings:
        log.warning("%s", warning)
    return result.workload


def convert_compose(
    text: str | Mapping[str, Any],
    name: str | None = None,
    namespace: str | None = None,
    source: str = "docker-compose.yml",
) -> ComposeResult:
    if isinstance(text, str):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ComposeError(f"{source}: malformed YAML: {exc}") from None
    else:
        doc = dict(text)
    if not is_compose(doc):
        raise ComposeError(f"{source}: not a compose file (no top-level 'services')")
    interpolation_problems: list[str] = []
    doc = _interpolate(doc, os.environ, interpolation_problems, source)
    if interpolation_problems:
        raise ComposeError("\n".join(interpolation_problems))
    services = doc.get("services")
    if not isinstance(services, dict) or not services:
        raise ComposeError(f"{source}: 'services' must map service names to their settings")
    problems: list[str] = []
    warnings: list[str] = []
    top_bad = sorted(k for k in doc if k not in _TOP_SUPPORTED and not str(k).startswith("x-"))
    if top_bad:
        problems.append(f"{source}: unsupported top-level keys: {', '.join(top_bad)}")
    wl_name = _label(str(name or doc.get("name") or "")) or None
    if wl_name is None:
        raise ComposeError(f"{source}: a workload name is needed (pass a name, or set 'name:' in the file)")

    conv = _Converter(source, warnings, problems)
    containers = [conv.service(str(svc), body) for svc, body in services.items()]
    policies = {p for p in conv.policies.values()}
    if len(policies) > 1:
        detail = ", ".join(f'"{s}": {p}' for s, p in conv.policies.items())
        problems.append(
            f"{source}: services need one restart policy (they restart as one workload), got {detail}"
        )
    networks = set(conv.networks.values())
    if len(networks) > 1:
        problems.append(
            f"{source}: services need the same network_mode (host or none), got {sorted(networks)}"
        )
    if problems:
        raise ComposeError("\n".join(problems))

    metadata: dict[str, Any] = {
        "name": wl_name,
        "annotations": {"fleetlet.io/source": f"docker-compose:{os.path.basename(source)}"},
    }
    if namespace:
        metadata["namespace"] = namespace
    if networks == {"none"}:
        metadata["annotations"]["fleetlet.io/network-mode"] = "none"
    spec: dict[str, Any] = {"runtime": "docker", "containers": containers}
    if conv.volumes:
        spec["volumes"] = list(conv.volumes.values())
    spec["restartPolicy"] = next(iter(policies)) if policies else "Always"
    workload = {"apiVersion": API_VERSION, "kind": "Workload", "metadata": metadata, "spec": spec}
    return ComposeResult(workload, warnings)


_VAR_RE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bad>))"
)


def _interpolate(value: Any, env: Mapping[str, str], problems: list[str], source: str) -> Any:
    """compose's variable substitution over every string of the document (keys stay)."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env, problems, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, problems, source) for v in value]
    if not isinstance(value, str) or "$" not in value:
        return value

    def sub(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        if m["plain"]:
            return env.get(m["plain"], "")
        if m["braced"]:
            name, op, arg = m["braced"], m["op"] or "", m["arg"] or ""
            current = env.get(name)
            unset = current is None or (op.startswith(":") and current == "")
            if op.endswith("-"):
                return arg if unset else str(current)
            if op.endswith("?") and unset:
                problems.append(f"{source}: required variable {name} is not set: {arg or 'no message'}")
                return ""
            return current or ""
        problems.append(f"{source}: invalid interpolation in {value!r} (use $$ for a literal $)")
        return ""

    return _VAR_RE.sub(sub, value)


def _label(text: str) -> str:
    """A DNS label from a compose name: lowercase, '_' and '.' become '-'."""
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return out[:63].rstrip("-")


class _Converter:
    def __init__(self, source: str, warnings: list[str], problems: list[str]) -> None:
        self.source = source
        self.warnings = warnings
        self.problems = problems
        self.volumes: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, str] = {}
        self.networks: dict[str, str] = {}

    def where(self, svc: str) -> str:
        return f'{self.source}: service "{svc}"'

    def service(self, svc: str, body: Any) -> dict[str, Any]:
        where = self.where(svc)
        if not isinstance(body, dict):
            self.problems.append(f"{where}: expected a mapping of settings")
            return {}
        bad = [
            k for k in body if k not in _SERVICE_SUPPORTED | _SERVICE_IGNORED and not str(k).startswith("x-")
        ]
        deploy = body.get("deploy") or {}
        if isinstance(deploy, dict):
            bad += [f"deploy.{k}" for k in deploy if k not in _DEPLOY_SUPPORTED]
        if bad:
            self.problems.append(f"{where}: unsupported keys: {', '.join(sorted(bad))}")
        for key in sorted(k for k in body if k in _SERVICE_IGNORED):
            self.warnings.append(f"{where}: ignoring {key!r} (containers of a workload start together)")
        name = _label(svc)
        if not name or not _LABEL_RE.match(name):
            self.problems.append(f"{where}: the service name cannot become a container name")
        image = body.get("image")
        if not isinstance(image, str) or not image:
            if "build" not in body:  # "build" is already reported as unsupported
                self.problems.append(f"{where}: 'image' is required")
            image = ""
        ctr: dict[str, Any] = {"name": name, "image": image}
        if "entrypoint" in body:
            ctr["command"] = self._argv(svc, "entrypoint", body["entrypoint"])
        if "command" in body:
            ctr["args"] = self._argv(svc, "command", body["command"])
        env = self._env(svc, body.get("environment"))
        if env:
            ctr["env"] = env
        ports = [p for item in body.get("ports") or [] for p in self._ports(svc, item)]
        if ports:
            ctr["ports"] = ports
        mounts = [m for item in body.get("volumes") or [] if (m := self._volume(svc, item)) is not None]
        if mounts:
            ctr["volumeMounts"] = mounts
        limits = self._limits(svc, body, deploy if isinstance(deploy, dict) else {})
        if limits:
            ctr["resources"] = {"limits": limits}
        probe = self._healthcheck(svc, body.get("healthcheck"))
        if probe:
            ctr["livenessProbe"] = probe
            ctr["readinessProbe"] = dict(probe)
        if body.get("working_dir"):
            ctr["workingDir"] = str(body["working_dir"])
        self._restart(svc, body, deploy if isinstance(deploy, dict) else {})
        mode = body.get("network_mode")
        if mode is not None:
            if mode not in ("host", "none"):
                self.problems.append(f"{where}: network_mode {mode!r} is not supported (use host or none)")
            else:
                self.networks[svc] = str(mode)
        else:
            self.networks[svc] = "host"
        return ctr

    def _argv(self, svc: str, key: str, value: Any) -> list[str]:
        if isinstance(value, str):
            return shlex.split(value)
        if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            return [str(v) for v in value]
        self.problems.append(f"{self.where(svc)}: {key} must be a string or a list of strings")
        return []

    def _env(self, svc: str, value: Any) -> list[dict[str, str]]:
        if value is None:
            return []
        pairs: list[tuple[str, Any]] = []
        if isinstance(value, dict):
            pairs = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, list):
            for item in value:
                key, eq, val = str(item).partition("=")
                pairs.append((key, val if eq else None))
        else:
            self.problems.append(f"{self.where(svc)}: environment must be a list or a mapping")
            return []
        out = []
        for key, val in pairs:
            if val is None:
                # compose takes a bare name from the shell running it: resolved now, at apply.
                val = os.environ.get(key, "")
            elif isinstance(val, bool):
                val = "true" if val else "false"
            out.append({"name": key, "value": str(val)})
        return out

    def _ports(self, svc: str, item: Any) -> list[dict[str, Any]]:
        where = self.where(svc)
        if isinstance(item, dict):
            target, published = item.get("target"), item.get("published")
            proto = str(item.get("protocol", "tcp"))
            text = f"{published}:{target}" if published else str(target)
        else:
            text, _, proto = str(item).partition("/")
            proto = proto or "tcp"
        parts = text.split(":")
        # "ip:host:container", "host:container" or "container"; the host IP is moot on host network.
        container = parts[-1]
        host = parts[-2] if len(parts) >= 2 else ""
        if "-" in container or "-" in host:
            self.problems.append(f"{where}: port ranges are not supported ({item!r}); list each port")
            return []
        try:
            port: dict[str, Any] = {"containerPort": int(container)}
            if host:
                port["hostPort"] = int(host)
        except ValueError:
            self.problems.append(f"{where}: cannot read port {item!r}")
            return []
        if proto.lower() not in ("tcp", "udp"):
            self.problems.append(f"{where}: port protocol must be tcp or udp, got {proto!r}")
            return []
        if proto.lower() == "udp":
            port["protocol"] = "UDP"
        if host and int(host) != port["containerPort"]:
            self.warnings.append(
                f"{where}: port {item!r}: containers use host networking, so the service listens on "
                f"{container}, not {host}"
            )
        return [port]

    def _volume(self, svc: str, item: Any) -> dict[str, Any] | None:
        where = self.where(svc)
        if isinstance(item, dict):
            kind = item.get("type", "volume")
            src, target = item.get("source"), item.get("target")
            read_only = bool(item.get("read_only", False))
            if kind not in ("bind", "volume"):
                self.problems.append(f"{where}: volume type {kind!r} is not supported (bind or volume)")
                return None
        else:
            fields = str(item).split(":")
            if len(fields) == 1:
                src, target, mode = None, fields[0], ""
            else:
                src, target, mode = fields[0], fields[1], (fields[2] if len(fields) > 2 else "")
            read_only = "ro" in mode.split(",")
            kind = "bind" if src and (src.startswith(("/", ".", "~"))) else "volume"
        if not target or not str(target).startswith("/"):
            self.problems.append(f"{where}: volume {item!r} needs an absolute container path")
            return None
        if kind == "bind":
            if not str(src).startswith("/"):
                self.problems.append(
                    f"{where}: bind mount {item!r}: relative host paths mean nothing on a device; "
                    "use an absolute path"
                )
                return None
            vol_name = _label(f"host-{src}") or "host"
            self.volumes.setdefault(vol_name, {"name": vol_name, "hostPath": {"path": str(src)}})
        else:
            vol_name = _label(str(src or f"anon-{svc}-{target}"))
            if vol_name not in self.volumes:
                self.warnings.append(
                    f"{where}: named volume {src or target!r} becomes an emptyDir: its data lives as "
                    "long as the workload on that device"
                )
            self.volumes.setdefault(vol_name, {"name": vol_name, "emptyDir": {}})
        mount: dict[str, Any] = {"name": vol_name, "mountPath": str(target)}
        if read_only:
            mount["readOnly"] = True
        return mount

    def _limits(self, svc: str, body: Mapping[str, Any], deploy: Mapping[str, Any]) -> dict[str, Any]:
        limits: dict[str, Any] = {}
        dl = ((deploy.get("resources") or {}).get("limits") or {}) if isinstance(deploy, dict) else {}
        mem = body.get("mem_limit", dl.get("memory"))
        if mem is not None:
            try:
                limits["memory"] = _compose_bytes(mem)
            except ValueError:
                self.problems.append(f"{self.where(svc)}: cannot read memory limit {mem!r}")
        cpus = body.get("cpus", dl.get("cpus"))
        if cpus is not None:
            try:
                limits["cpu"] = f"{round(float(cpus) * 1000)}m"
            except ValueError:
                self.problems.append(f"{self.where(svc)}: cannot read cpus {cpus!r}")
        return limits

    def _healthcheck(self, svc: str, hc: Any) -> dict[str, Any] | None:
        if not hc:
            return None
        where = self.where(svc)
        if not isinstance(hc, dict):
            self.problems.append(f"{where}: healthcheck must be a mapping")
            return None
        if hc.get("disable"):
            return None
        test = hc.get("test")
        if isinstance(test, str):
            command = ["sh", "-c", test]
        elif isinstance(test, list) and test and test[0] == "NONE":
            return None
        elif isinstance(test, list) and len(test) >= 2 and test[0] == "CMD":
            command = [str(t) for t in test[1:]]
        elif isinstance(test, list) and len(test) == 2 and test[0] == "CMD-SHELL":
            command = ["sh", "-c", str(test[1])]
        else:
            self.problems.append(
                f"{where}: healthcheck test must be a string, [CMD, ...] or [CMD-SHELL, cmd]"
            )
            return None
        probe: dict[str, Any] = {"exec": {"command": command}}
        try:
            for key, field_name, default in (
                # compose's defaults: check every 30 s, give each check 30 s.
                ("interval", "periodSeconds", 30),
                ("timeout", "timeoutSeconds", 30),
                ("start_period", "initialDelaySeconds", None),
            ):
                if key in hc:
                    seconds = _duration(str(hc[key]))
                    probe[field_name] = max(0 if field_name == "initialDelaySeconds" else 1, round(seconds))
                elif default is not None:
                    probe[field_name] = default
        except ValueError as exc:
            self.problems.append(f"{where}: healthcheck: {exc}")
            return None
        if "retries" in hc:
            probe["failureThreshold"] = max(1, int(hc["retries"]))
        return probe

    def _restart(self, svc: str, body: Mapping[str, Any], deploy: Mapping[str, Any]) -> None:
        where = self.where(svc)
        if "restart" in body:
            value = str(body["restart"]).split(":")[0]
            if value not in _RESTART:
                self.problems.append(
                    f"{where}: restart {body['restart']!r} is not one of {', '.join(_RESTART)}"
                )
                return
            if ":" in str(body["restart"]):
                self.warnings.append(f"{where}: the retry limit in {body['restart']!r} is ignored")
            self.policies[svc] = _RESTART[value]
        elif isinstance(deploy.get("restart_policy"), dict):
            cond = str(deploy["restart_policy"].get("condition", "any"))
            if cond not in _RESTART_CONDITION:
                self.problems.append(f"{where}: deploy.restart_policy.condition {cond!r} is not supported")
                return
            self.policies[svc] = _RESTART_CONDITION[cond]


_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}


def _compose_bytes(value: Any) -> int:
    """compose byte values: 512m, 1g, 1.5gb, or a plain number of bytes (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match[2].lower() not in _UNITS:
        raise ValueError(value)
    return int(float(match[1]) * _UNITS[match[2].lower()])


def _duration(text: str) -> float:
    """compose durations: 30s, 1m30s, 1h, 500ms, 2.5s."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"cannot read duration {text!r} (use e.g. 30s or 1m30s)")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    return sum(float(n) * scale[u] for n, u in parts)
