"""The ``dir`` source: content-hash revisions, half-written folders, safetensors metadata."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest

from tests.watcher.conftest import releases
from uptake.events import release_id
from uptake.watcher_config import DirSourceConfig, Filters
from watcher.sources.dirs import MalformedModel, safetensors_parameters
from watcher.store import Store


def safetensors_bytes(shapes: dict[str, list[int]]) -> bytes:
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * offset


def write_model(root: Path, repo: str, *, shapes=None, license_: str = "apache-2.0") -> Path:
    folder = root / repo
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    )
    (folder / "README.md").write_text(f"---\nlicense: {license_}\n---\n# {repo}\n")
    (folder / "model.safetensors").write_bytes(safetensors_bytes(shapes or {"w": [4, 8]}))
    return folder


def age(folder: Path, seconds: float = 3600) -> None:
    past = time.time() - seconds
    for path in folder.rglob("*"):
        os.utime(path, (past, past))


def dir_source(root: Path, **kw) -> DirSourceConfig:
    data = {"name": "drops", "kind": "dir", "path": root, "interval_s": 0.5, **kw}
    return DirSourceConfig.model_validate(data)


def test_half_written_folder_is_released_once_it_stops_changing(
    tmp_path: Path, make_settings, make_service, monkeypatch
) -> None:
    root = tmp_path / "models"
    age(write_model(root, "acme/existing"))
    write_model(root, "acme/inflight")  # being written while the watcher starts
    settings = make_settings(dir_source(root))
    service = make_service(settings)
    service.start()
    first = service.poll_source("drops")
    assert first.ok and first.result.first_run and first.result.baseline == 1

    # a drop in progress: config first, then half the weights, then the rest
    folder = root / "acme" / "dropped"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    data = safetensors_bytes({"a": [16, 16], "b": [16]})
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    second = service.poll_source("drops")
    assert second.ok
    assert [rid.split("@")[0] for rid in second.result.released] == ["drops:acme/inflight"]
    (folder / "model.safetensors").write_bytes(data)  # still changing: not yet
    assert service.poll_source("drops").result.released == []
    (folder / "weights.part").write_bytes(b"partial")  # a download tool still at work
    assert service.poll_source("drops").result.released == []
    assert service.poll_source("drops").result.released == []  # stable, but .part present
    (folder / "weights.part").unlink()
    assert service.poll_source("drops").result.released == []  # changed again
    done = service.poll_source("drops")
    assert len(done.result.released) == 1
    revision = done.result.released[0].split("@")[1]
    assert len(revision) == 64

    # same content, new mtimes: same revision, no new release, and once the new fingerprint
    # is remembered the folder is not hashed again
    age(folder, 10)
    assert service.poll_source("drops").result.released == []
    assert service.poll_source("drops").result.released == []
    store = Store.for_settings(settings)
    assert store.known("drops")["acme/dropped"].revision == revision
    store.close()

    def no_hashing(*_: object) -> str:
        raise AssertionError("hashed an unchanged folder")

    monkeypatch.setattr("watcher.sources.dirs.content_hash", no_hashing)
    assert service.poll_source("drops").ok
    monkeypatch.undo()

    got = {e.repo_id: e for e in releases(settings, expected=2)}
    assert set(got) == {"acme/inflight", "acme/dropped"}
    event = got["acme/dropped"]
    assert event.release_id == release_id("drops", "acme/dropped", revision)
    assert event.endpoint == str(root.resolve() / "acme" / "dropped")
    assert event.num_parameters == 16 * 16 + 16
    assert (event.pipeline_tag, event.library) == ("text-generation", "transformers")
    assert got["acme/inflight"].license == "apache-2.0"


def test_dir_filters_and_new_content_as_new_revision(
    tmp_path: Path, make_settings, make_service
) -> None:
    root = tmp_path / "models"
    age(write_model(root, "acme/tracked"))
    settings = make_settings(
        dir_source(root, track_updates=True, filters=Filters(max_params=1000, licenses=["mit"]))
    )
    service = make_service(settings)
    service.start()
    assert service.poll_source("drops").ok  # baseline
    age(write_model(root, "acme/big", shapes={"w": [64, 64]}, license_="mit"))
    age(write_model(root, "acme/closed", license_="proprietary"))
    pickled = root / "acme" / "pickled"
    pickled.mkdir(parents=True)
    (pickled / "config.json").write_text("{}")
    (pickled / "README.md").write_text("---\nlicense: mit\n---\n")
    (pickled / "pytorch_model.bin").write_bytes(b"\0" * 64)
    age(pickled)
    service.poll_source("drops")  # first sight
    outcome = service.poll_source("drops")
    assert dict(outcome.result.skipped) == {
        "acme/big": "too_large",
        "acme/closed": "license",
        "acme/pickled": "no_safetensors",
    }
    assert outcome.result.released == []

    # new weights in a watched folder: a new revision (track_updates), released once stable
    (root / "acme" / "tracked" / "README.md").write_text("---\nlicense: mit\n---\n")
    (root / "acme" / "tracked" / "model.safetensors").write_bytes(safetensors_bytes({"w": [8]}))
    assert service.poll_source("drops").result.released == []
    again = service.poll_source("drops")
    assert len(again.result.released) == 1
    (event,) = releases(settings, expected=1)
    assert event.repo_id == "acme/tracked" and event.num_parameters == 8


def test_safetensors_header_parsing(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(safetensors_bytes({"a": [3, 5], "b": [7]}))
    assert safetensors_parameters(path) == 22
    path.write_bytes(b"\x10\x00")  # truncated
    with pytest.raises(MalformedModel, match="shorter than a safetensors header"):
        safetensors_parameters(path)
