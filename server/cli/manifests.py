"""Reading manifests for ``apply -f`` and ``delete -f``: files, folders, stdin; YAML or JSON.

Every problem is a :class:`ManifestError` whose message names the file and the line or
document, so the user sees one line that points at the mistake.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..client.resources import API_VERSION, REGISTRY, ResourceType, UnknownResource
from .errors import UserError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(UserError):
    pass


@dataclass(frozen=True)
class Manifest:
    source: str  # file name, or "-" for stdin
    index: int  # 1-based document number in the source
    line: int | None  # 1-based line where the document starts, when known
    obj: dict[str, Any]
    resource: ResourceType

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        ns = (self.obj.get("metadata") or {}).get("namespace")
        return str(ns) if ns else None

    @property
    def where(self) -> str:
        return _where(self.source, self.index, self.line)


def _where(source: str, index: int, line: int | None) -> str:
    loc = f"{source}:{line}" if line else source
    return f"{loc} (document {index})"


def expand_paths(paths: tuple[str, ...] | list[str]) -> list[str]:
    """Files as given, folders as their *.yaml/*.yml/*.json sorted by name, "-" for stdin."""
    out: list[str] = []
    for p in paths:
        if p == "-":
            out.append(p)
            continue
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.iterdir() if f.is_file() and f.suffix in MANIFEST_SUFFIXES)
            if not found:
                raise ManifestError(f'no manifests (*.yaml, *.yml, *.json) found in "{p}"')
            out.extend(found)
        elif path.exists():
            out.append(p)
        else:
            raise ManifestError(f'the path "{p}" does not exist')
    return out


def read_source(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text()
    except UnicodeDecodeError:
        raise ManifestError(f"{source}: not a text file") from None
    except OSError as e:
        raise ManifestError(f"{source}: {e.strerror or e}") from None


def parse_documents(text: str, source: str) -> list[tuple[int, int | None, Any]]:
    """(1-based index, start line, data) for every non-empty document in ``text``."""
    if source.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{source}:{e.lineno}: malformed JSON: {e.msg}") from None
        return [(1, 1, data)]
    docs: list[tuple[int, int | None, Any]] = []
    loader = yaml.SafeLoader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            index += 1
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is not None:
                docs.append((index, node.start_mark.line + 1, data))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = e.problem or e.context or "invalid syntax"
        raise ManifestError(f"{source}{line}: malformed YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise ManifestError(f"{source}: malformed YAML: {e}") from None
    finally:
        loader.dispose()
    return docs


def to_manifest(source: str, index: int, line: int | None, data: Any) -> Manifest:
    where = _where(source, index, line)
    if not isinstance(data, dict):
        raise ManifestError(
            f"{where}: expected an object with apiVersion, kind and metadata, got a {type(data).__name__}"
        )
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ManifestError(f'{where}: the object has no "kind"')
    api_version = data.get("apiVersion")
    if not isinstance(api_version, str) or not api_version:
        raise ManifestError(f'{where}: the {kind} has no "apiVersion" (use {API_VERSION})')
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta.get("name"):
        raise ManifestError(f'{where}: the {kind} has no "metadata.name"')
    try:
        if api_version != API_VERSION:
            raise UnknownResource(kind)
        rt = REGISTRY.for_kind(kind)
    except UnknownResource:
        # kubectl's wording for a manifest of a kind the server doesn't serve.
        raise ManifestError(
            f'{where}: unable to recognize "{source}": '
            f'no matches for kind "{kind}" in version "{api_version}"'
        ) from None
    return Manifest(source, index, line, data, rt)


def is_compose(data: object) -> bool:
    """A docker-compose document: ``services:`` and no Kubernetes ``kind``."""
    return isinstance(data, dict) and "services" in data and "kind" not in data


def _from_compose(data: dict[str, object], source: str) -> dict[str, object]:
    """A compose application becomes one Workload (its services are the containers)."""
    from fleetlet.agent.compose import ComposeError, compose_to_workload, project_name

    try:
        return compose_to_workload(data, project_name(source), source=source)
    except ComposeError as e:
        raise ManifestError(str(e)) from None


def load_manifests(paths: tuple[str, ...] | list[str]) -> list[Manifest]:
    """Load and check everything first, so nothing is applied when any document is wrong."""
    result: list[Manifest] = []
    for source in expand_paths(paths):
        for index, line, data in parse_documents(read_source(source), source):
            if (
                isinstance(data, dict)
                and isinstance(data.get("items"), list)
                and str(data.get("kind", "")).endswith("List")
            ):
                for item in data["items"]:
                    result.append(to_manifest(source, index, line, item))
            else:
                if is_compose(data):
                    data = _from_compose(data, source)
                result.append(to_manifest(source, index, line, data))
    if not result:
        raise ManifestError(f"no objects passed to apply in {', '.join(paths)}")
    return result
