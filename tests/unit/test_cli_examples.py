"""The manifests in examples/ load with the CLI and validate against the API's JSON Schemas."""

from __future__ import annotations

import inspect
from pathlib import Path

import jsonschema
import pytest
from fleetlet.schemas.api_schemas import kind_schema
from fleetlet.server.cli.manifests import load_manifests

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["web.yaml", "sensor-app.yaml"])
def test_example_is_valid(name: str) -> None:
    (manifest,) = load_manifests([str(EXAMPLES / name)])
    assert manifest.resource.kind == "Deployment"
    jsonschema.validate(manifest.obj, kind_schema("Deployment"))
    spec = manifest.obj["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_sensor_app_is_valid_python_with_async_main() -> None:
    (manifest,) = load_manifests([str(EXAMPLES / "sensor-app.yaml")])
    source = manifest.obj["spec"]["template"]["spec"]["app"]["modules"][0]["source"]
    namespace: dict[str, object] = {}
    exec(compile(source, "main.py", "exec"), namespace)
    assert inspect.iscoroutinefunction(namespace["main"])
    assert 'ctx.metric("temperature"' in source
    assert "await asyncio.sleep(5)" in source
