"""Image garbage collection, like the kubelet's: high and low thresholds.

When usage is above ``high``, unused images (no container, running or stopped, refers to
them, and no desired workload names them) are removed oldest first until usage is at or
below ``low``. Usage is either the percent used of the filesystem holding docker's data root
(``measure="disk"``, the kubelet's way), or the bytes of all images (``measure="images"``,
the `docker system df` figure; useful when images share a disk with other data).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .runtime import DockerRuntime, parse_image_ref

__all__ = ["GCResult", "ImageGC"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GCResult:
    usage_before: float
    usage_after: float
    removed: tuple[str, ...]


class ImageGC:
    def __init__(
        self,
        runtime: DockerRuntime,
        *,
        high: float = 85.0,
        low: float = 80.0,
        measure: Literal["disk", "images"] = "disk",
        protected: Callable[[], Iterable[str]] = lambda: (),
    ) -> None:
        if low > high:
            raise ValueError(f"image GC: low threshold {low} is above high threshold {high}")
        self.runtime = runtime
        self.high = high
        self.low = low
        self.measure = measure
        self.protected = protected

    async def usage(self) -> float:
        if self.measure == "images":
            return float(sum(int(i.get("Size") or 0) for i in await self.runtime.list_images()))
        root = str((await self.runtime.info()).get("DockerRootDir") or "/var/lib/docker")
        total, used, _free = await asyncio.to_thread(shutil.disk_usage, root)
        return 100.0 * used / total if total else 0.0

    async def collect(self) -> GCResult:
        """One GC pass; returns what it removed. Safe to run while workloads start."""
        before = await self.usage()
        if before <= self.high:
            return GCResult(before, before, ())
        in_use = await self.runtime.images_in_use()
        protected = set(self.protected())
        keep_refs = {_normal(r) for r in protected if not r.startswith("sha256:")}
        candidates: list[tuple[float, dict[str, Any]]] = []
        for img in await self.runtime.list_images():
            if img["Id"] in in_use or img["Id"] in protected:
                continue
            tags = img.get("RepoTags") or []
            if any(_normal(t) in keep_refs for t in tags if t != "<none>:<none>"):
                continue
            try:
                # Only inspect has Metadata.LastTagTime (when it was pulled or tagged).
                detail = await self.runtime.inspect_image(img["Id"])
            except Exception:  # removed meanwhile
                continue
            candidates.append((_age_key(detail), img))
        candidates.sort(key=lambda pair: pair[0])
        removed: list[str] = []
        usage = before
        for _age, img in candidates:
            if usage <= self.low:
                break
            try:
                await self.runtime.remove_image(img["Id"])
            except Exception as exc:  # in use by a container created meanwhile, or a parent image
                log.info("image GC: could not remove %s: %s", img["Id"][:19], exc)
                continue
            removed.append(img["Id"])
            usage = await self.usage()
        if removed:
            log.info("image GC removed %d images: usage %.1f -> %.1f", len(removed), before, usage)
        return GCResult(before, usage, tuple(removed))


def _normal(ref: str) -> str:
    p = parse_image_ref(ref)
    return f"{p.registry}/{p.path}:{p.tag}@{p.digest}"


def _age_key(img: dict[str, Any]) -> float:
    """Least recently tagged (pulled) first; fall back to the image's creation time."""
    created = img.get("Created") or 0
    if isinstance(created, str):  # inspect gives RFC 3339, the list gives unix seconds
        try:
            created = datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00").timestamp()
        except ValueError:
            created = 0
    meta = img.get("Metadata") or {}
    stamp = meta.get("LastTagTime") if isinstance(meta, dict) else None
    if isinstance(stamp, str) and not stamp.startswith("0001-"):
        try:
            return datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()
        except ValueError:
            pass
    return float(created)
