"""Fuzzing the readers of untrusted source data: a drop folder's ``config.json``, README front
matter and safetensors headers, and the hub's JSON (model list, model info).

Each reader may refuse its input only with its own error (``MalformedModel``; for the hub
``SourceFault``); any other exception is a crash the test reports. Examples are bounded so the
test runs in CI in seconds.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.watcher.fake_hub import FakeHub
from uptake.settings import Settings
from uptake.watcher_config import HfSourceConfig
from watcher.faults import SourceFault
from watcher.sources.dirs import (
    MalformedModel,
    ModelCard,
    ModelConfig,
    read_card,
    read_config,
    safetensors_parameters,
)
from watcher.sources.hf import HfSource

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


def _object_with(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects that use the keys a reader looks at, with values of any JSON type."""
    known = st.dictionaries(st.sampled_from(keys), json_values, max_size=len(keys))
    return st.builds(lambda a, b: {**b, **a}, known, st.dictionaries(st.text(max_size=8), scalars))


# -- drop folders ---------------------------------------------------------------------------

CONFIG_KEYS = ["architectures", "model_type", "quantization_config", "auto_map"]
config_docs = _object_with(CONFIG_KEYS).map(json.dumps).map(str.encode)
config_bytes = config_docs | json_values.map(json.dumps).map(str.encode) | st.binary(max_size=64)


@FUZZ
@given(data=config_bytes)
@example(data=b"[" * 100_000)
@example(data=b"1" * 5_000)
@example(data=b'{"architectures": 5}')
def test_config_reader_refuses_only_with_malformed_model(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(data)
    try:
        config = read_config(path)
    except MalformedModel:
        return
    assert isinstance(config, ModelConfig)
    assert config.architectures is None or all(isinstance(a, str) for a in config.architectures)


CARD_KEYS = ["pipeline_tag", "library_name", "license", "tags"]
front_matter = _object_with(CARD_KEYS).map(json.dumps)  # JSON is YAML
card_texts = (
    front_matter.map(lambda fm: f"---\n{fm}\n---\n# model\n")
    | st.text(max_size=60).map(lambda t: f"---\n{t}\n---\n")
    | st.text(max_size=60)
)


@FUZZ
@given(text=card_texts)
@example(text="---\na: &a [*a]\n---\n")  # an alias cycle
@example(text="---\n" + "[" * 5_000 + "\n---\n")
@example(text="---\ntags: {a: 1}\n---\n")
def test_card_reader_refuses_only_with_malformed_model(tmp_path: Path, text: str) -> None:
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        card = read_card(path)
    except MalformedModel:
        return
    assert isinstance(card, ModelCard)
    assert card.pipeline_tag is None or isinstance(card.pipeline_tag, str)


tensor_entries = _object_with(["dtype", "shape", "data_offsets"]) | json_values
shapes = st.lists(st.integers(0, 2**70) | scalars, max_size=4)
tensors = st.builds(lambda s: {"dtype": "F32", "shape": s, "data_offsets": [0, 0]}, shapes)
headers = st.dictionaries(st.text(max_size=8), tensors | tensor_entries, max_size=4) | json_values


@st.composite
def safetensors_files(draw: st.DrawFn) -> bytes:
    raw = json.dumps(draw(headers)).encode()
    declared = draw(st.sampled_from(["exact", "any", "short"]))
    length = {
        "exact": len(raw),
        "any": draw(st.integers(0, 2**64 - 1)),
        "short": max(len(raw) - 1, 0),
    }[declared]
    return struct.pack("<Q", length) + raw + draw(st.binary(max_size=8))


@FUZZ
@given(data=safetensors_files() | st.binary(max_size=24))
@example(data=struct.pack("<Q", 2**40) + b"{}")
@example(data=struct.pack("<Q", 17) + b'{"w": {"shape": ["x"]}}')
def test_safetensors_header_reader_refuses_only_with_malformed_model(
    tmp_path: Path, data: bytes
) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    try:
        count = safetensors_parameters(path)
    except MalformedModel:
        return
    assert isinstance(count, int) and 0 <= count < 2**63


# -- hub JSON -------------------------------------------------------------------------------

ITEM_KEYS = [
    "_id",
    "id",
    "modelId",
    "sha",
    "author",
    "createdAt",
    "lastModified",
    "private",
    "gated",
    "disabled",
    "pipeline_tag",
    "library_name",
    "tags",
    "siblings",
    "safetensors",
    "config",
    "cardData",
    "transformersInfo",
    "spaces",
    "usedStorage",
]
good_item = {
    "_id": "x",
    "id": "acme/model",
    "sha": "0" * 40,
    "createdAt": "2024-01-01T00:00:00.000Z",
    "tags": ["license:mit"],
    "siblings": [{"rfilename": "model.safetensors"}, {"rfilename": "config.json"}],
    "safetensors": {"parameters": {"BF16": 10}, "total": 10},
}
items = st.builds(lambda a, b: {**a, **b}, st.just(good_item), _object_with(ITEM_KEYS)) | (
    _object_with(ITEM_KEYS)
)
hub_bodies = (
    st.lists(items, max_size=3).map(json.dumps)
    | items.map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=30)
).map(str.encode)


@pytest.fixture(scope="module")
def fuzz_hub() -> Iterator[FakeHub]:
    with FakeHub() as hub:
        hub.add("acme/model")
        yield hub


@pytest.fixture(scope="module")
def hub_source(fuzz_hub: FakeHub) -> HfSource:
    config = HfSourceConfig.model_validate(
        {"name": "fuzz", "kind": "hf", "endpoint": fuzz_hub.url, "authors": ["acme"]}
    )
    return HfSource(config, Settings())


@FUZZ
@given(body=hub_bodies)
@example(body=b"[" * 100_000)
@example(body=b'[{"id": "acme/x", "sha": "' + b"1" * 5_000 + b'"}]')
def test_hub_json_is_parsed_or_refused_as_a_source_fault(
    fuzz_hub: FakeHub, hub_source: HfSource, body: bytes
) -> None:
    fuzz_hub.clear_faults()
    fuzz_hub.fail(kind="body", body=body, times=None)
    for call in (lambda: hub_source.scan(None), lambda: hub_source.lookup("acme/model")):
        try:
            result = call()
        except SourceFault:
            continue
        snaps = result if isinstance(result, list) else [result] if result else []
        for snap in snaps:
            assert isinstance(snap.repo_id, str) and isinstance(snap.revision, str)
