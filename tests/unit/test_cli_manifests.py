"""apply/delete -f: document parsing and the one-line errors that point at the mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fleetlet.server.cli.manifests import ManifestError, load_manifests

WL = """apiVersion: fleetlet.io/v1
kind: Workload
metadata:
  name: {name}
spec:
  runtime: docker
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_multi_document_yaml(tmp_path: Path) -> None:
    f = write(tmp_path, "a.yaml", "---\n" + WL.format(name="one") + "---\n" + WL.format(name="two") + "---\n")
    ms = load_manifests([f])
    assert [(m.name, m.resource.kind, m.index) for m in ms] == [
        ("one", "Workload", 1),
        ("two", "Workload", 2),
    ]
    assert ms[1].line == 9  # the first line of the document after its "---"


def test_folder_is_sorted_and_filtered(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", WL.format(name="b"))
    write(
        tmp_path,
        "a.json",
        json.dumps(
            {"apiVersion": "fleetlet.io/v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {}}
        ),
    )
    write(tmp_path, "c.yaml", WL.format(name="c"))
    write(tmp_path, "notes.txt", "not a manifest")
    assert [m.name for m in load_manifests([str(tmp_path)])] == ["a", "b", "c"]


def test_list_kind_is_expanded(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "fleetlet.io/v1",
        "kind": "List",
        "items": [
            {"apiVersion": "fleetlet.io/v1", "kind": "Device", "metadata": {"name": "pi"}},
            {"apiVersion": "fleetlet.io/v1", "kind": "Gateway", "metadata": {"name": "gw"}},
        ],
    }
    f = write(tmp_path, "l.json", json.dumps(doc))
    assert [m.resource.kind for m in load_manifests([f])] == ["Device", "Gateway"]


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(WL.format(name="piped")))
    assert load_manifests(["-"])[0].name == "piped"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "apiVersion: fleetlet.io/v1\nmetadata: {name: x}\n",
            r'x\.yaml:1 \(document 1\): the object has no "kind"',
        ),
        ("kind: Workload\nmetadata: {name: x}\n", r'\(document 1\): the Workload has no "apiVersion"'),
        ("apiVersion: fleetlet.io/v1\nkind: Workload\nmetadata: {}\n", r'has no "metadata.name"'),
        ("- a\n- b\n", r"expected an object with apiVersion, kind and metadata, got a list"),
        (
            "apiVersion: fleetlet.io/v1\nkind: Foo\nmetadata: {name: x}\n",
            r'unable to recognize ".*x\.yaml": no matches for kind "Foo" in version "fleetlet\.io/v1"',
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
            r'no matches for kind "Deployment" in version "apps/v1"',
        ),
    ],
)
def test_structural_errors_name_file_and_document(tmp_path: Path, text: str, expected: str) -> None:
    f = write(tmp_path, "x.yaml", text)
    with pytest.raises(ManifestError, match=expected):
        load_manifests([f])


def test_second_document_error_names_document_2(tmp_path: Path) -> None:
    f = write(tmp_path, "x.yaml", WL.format(name="ok") + "---\nkind: Workload\n")
    with pytest.raises(ManifestError, match=r"x\.yaml:8 \(document 2\)"):
        load_manifests([f])


def test_malformed_yaml_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    f = write(tmp_path, "bad.yaml", "apiVersion: fleetlet.io/v1\nkind: Workload\nmetadata:\n  name: [oops\n")
    with pytest.raises(ManifestError) as info:
        load_manifests([f])
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{f}:") and "malformed YAML" in msg
    line = int(msg.split(":")[1])
    assert line >= 4


def test_malformed_json(tmp_path: Path) -> None:
    f = write(tmp_path, "bad.json", '{\n  "kind": "Workload",\n  oops\n}')
    with pytest.raises(ManifestError, match=rf"{f}:3: malformed JSON"):
        load_manifests([f])


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r'the path ".*nope.yaml" does not exist'):
        load_manifests([str(tmp_path / "nope.yaml")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no manifests"):
        load_manifests([str(tmp_path / "empty")])


def test_only_empty_documents(tmp_path: Path) -> None:
    f = write(tmp_path, "e.yaml", "---\n---\n")
    with pytest.raises(ManifestError, match="no objects passed to apply"):
        load_manifests([f])
