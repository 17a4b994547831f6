"""What a Workload references: the Secret and ConfigMap names in its spec.

Shared by the gateway (which watches exactly these for each bound Workload) and the API
server's authorizer (which lets a gateway read only these), as Kubernetes shares its pod
visitors between the kubelet and the node authorizer: one definition, so the gateway is never
refused what it needs nor given more.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def workload_references(spec: Obj) -> tuple[set[str], set[str]]:
    """(Secret names, ConfigMap names) a Workload spec refers to, all in the Workload's namespace.

    The one definition of "referenced": the gateway watches exactly these for each bound
    Workload, and the API server (server/auth/rbac.py) lets a gateway token read a Secret or
    ConfigMap only when a Workload bound to one of its devices names it here. It must cover all
    that gateway/translate.py reads (env key refs, secret and configMap volumes, app modules and
    app secrets), or the gateway is refused what it needs.
    """
    secrets: set[str] = set()
    configmaps: set[str] = set()

    def key_refs(value_from: Any) -> None:
        if isinstance(value_from, dict):
            s = value_from.get("secretKeyRef")
            c = value_from.get("configMapKeyRef")
            if isinstance(s, dict) and s.get("name"):
                secrets.add(str(s["name"]))
            if isinstance(c, dict) and c.get("name"):
                configmaps.add(str(c["name"]))

    for c in spec.get("containers") or []:
        if isinstance(c, dict):
            for env in c.get("env") or []:
                if isinstance(env, dict):
                    key_refs(env.get("valueFrom"))
    for v in spec.get("volumes") or []:
        if isinstance(v, dict):
            if isinstance(v.get("secret"), dict) and v["secret"].get("secretName"):
                secrets.add(str(v["secret"]["secretName"]))
            if isinstance(v.get("configMap"), dict) and v["configMap"].get("name"):
                configmaps.add(str(v["configMap"]["name"]))
    app = spec.get("app")
    if isinstance(app, dict):
        for m in app.get("modules") or []:
            if (
                isinstance(m, dict)
                and isinstance(m.get("configMapRef"), dict)
                and m["configMapRef"].get("name")
            ):
                configmaps.add(str(m["configMapRef"]["name"]))
        for s in app.get("secrets") or []:
            if isinstance(s, str):
                secrets.add(s)
    return secrets, configmaps
