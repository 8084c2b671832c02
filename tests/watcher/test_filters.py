"""Filters: each rejects with its own recorded reason; incomplete uploads are re-checked."""

from __future__ import annotations

import time

import pytest

from tests.watcher.conftest import hf_source, releases
from tests.watcher.fake_hub import FakeHub
from uptake.watcher_config import Filters
from watcher.filters import evaluate
from watcher.snapshot import RepoSnapshot
from watcher.status import watcher_status
from watcher.store import Store

FILES = ("README.md", "config.json", "model.safetensors")
STRICT = Filters(
    include=["acme/*"],
    exclude=["*-GGUF", "*-AWQ"],
    pipeline_tags=["text-generation"],
    libraries=["transformers"],
    licenses=["apache-2.0", "mit"],
    max_params=10_000_000_000,
    skip_remote_code=True,
)


def snap(**kw) -> RepoSnapshot:
    base = {
        "repo_id": "acme/base-7b",
        "revision": "abc",
        "pipeline_tag": "text-generation",
        "library": "transformers",
        "license": "apache-2.0",
        "num_parameters": 7_000_000_000,
        "files": FILES,
        "detailed": True,
    }
    return RepoSnapshot(**{**base, **kw})


@pytest.mark.parametrize(
    ("changes", "outcome", "reason"),
    [
        ({}, "accept", ""),
        ({"repo_id": "other/base-7b"}, "skip", "not_included"),
        ({"repo_id": "acme/base-7b-GGUF"}, "skip", "excluded"),
        ({"repo_id": "acme/base-7b-awq"}, "skip", "excluded"),  # globs ignore case
        ({"tags": ("gptq",)}, "skip", "quantized"),
        ({"quantized": True}, "skip", "quantized"),  # config.quantization_config
        ({"pipeline_tag": "text-to-image"}, "skip", "pipeline_tag"),
        ({"pipeline_tag": None}, "skip", "pipeline_tag"),
        ({"library": "diffusers"}, "skip", "library"),
        ({"license": "llama3"}, "skip", "license"),
        ({"license": None, "tags": ("license:mit",)}, "accept", ""),
        ({"license": None}, "skip", "license"),
        ({"gated": True}, "skip", "gated"),
        ({"private": True}, "skip", "private"),
        ({"requires_remote_code": True}, "skip", "remote_code"),
        ({"num_parameters": 70_000_000_000}, "skip", "too_large"),
        ({"num_parameters": None}, "defer", "params_unknown"),
        ({"files": ("config.json", "pytorch_model.bin")}, "skip", "no_safetensors"),
        ({"files": ("config.json",)}, "defer", "incomplete"),
        ({"files": ("model.safetensors",)}, "defer", "incomplete"),
        (
            {
                "files": (
                    "config.json",
                    "model.safetensors.index.json",
                    "model-00001-of-00003.safetensors",
                    "model-00003-of-00003.safetensors",
                )
            },
            "defer",
            "incomplete",
        ),
        (
            {
                "files": (
                    "config.json",
                    "model-00001-of-00002.safetensors",
                    "model-00002-of-00002.safetensors",
                )
            },
            "accept",
            "",
        ),
    ],
)
def test_each_filter_has_its_reason(changes, outcome, reason) -> None:
    verdict = evaluate(snap(**changes), STRICT, has_token=False)
    assert (verdict.outcome, verdict.reason) == (outcome, reason)
    if outcome != "accept":
        assert verdict.detail


def test_listing_data_lets_unknowns_through_until_details() -> None:
    listed = RepoSnapshot(repo_id="acme/x", revision="a")  # nothing expanded yet
    assert evaluate(listed, STRICT, has_token=False).accepted
    assert evaluate(snap(gated=True), STRICT, has_token=True).accepted
    opt_in = STRICT.model_copy(update={"skip_private": False})
    assert evaluate(snap(private=True), opt_in, has_token=True).accepted
    marked = evaluate(snap(requires_remote_code=True), Filters(), has_token=False)
    assert marked.accepted  # default: published, marked requires_remote_code


def test_skips_are_recorded_with_reasons_and_shown_in_status(
    hub: FakeHub, make_settings, make_service
) -> None:
    hub.add("acme/old")
    source = hf_source(hub, filters=STRICT)
    settings = make_settings(source)
    service = make_service(settings)
    service.start()
    assert service.poll_source("hub").ok
    hub.add("acme/Good-7B")
    hub.add("acme/Good-7B-GGUF")
    hub.add("acme/Tiny-Q", extra_tags=["awq"])
    hub.add("acme/Painter", pipeline_tag="text-to-image")
    hub.add("acme/Flaxy", library_name="flax")
    hub.add("acme/Restricted", license="llama3")
    hub.add("acme/Gated", gated="manual")
    hub.add("acme/Huge", params=70_000_000_000)
    hub.add("acme/Custom", config={"architectures": ["X"], "auto_map": {"AutoModel": "m.X"}})
    hub.add("acme/Pickled", files=["config.json", "pytorch_model.bin"])
    outcome = service.poll_source("hub")
    assert outcome.ok
    assert [e.repo_id for e in releases(settings, expected=1)] == ["acme/Good-7B"]
    expected = {
        "acme/Good-7B-GGUF": "excluded",
        "acme/Tiny-Q": "quantized",
        "acme/Painter": "pipeline_tag",
        "acme/Flaxy": "library",
        "acme/Restricted": "license",
        "acme/Gated": "gated",
        "acme/Huge": "too_large",
        "acme/Custom": "remote_code",
        "acme/Pickled": "no_safetensors",
    }
    assert dict(outcome.result.skipped) == expected
    # cheap rejections cost no model_info request
    looked_up = {
        r.path.split("/revision/")[0].removeprefix("/api/models/") for r in hub.info_requests()
    }
    # the parameter count needs a lookup; custom_code, licenses and quantisation are tags
    assert looked_up == {"acme/Good-7B", "acme/Pickled", "acme/Huge"}

    section = watcher_status(settings)
    assert section.error is None
    shown = {row[2]: (row[4], row[5]) for row in section.rows}
    assert shown["acme/Good-7B"] == ("published", "")
    for repo, reason in expected.items():
        status, why = shown[repo]
        assert status == "skipped" and why.startswith(reason + ":")
    assert {s["reason"] for s in section.data["skips"]} == set(expected.values())


def test_incomplete_upload_is_rechecked_then_released_or_given_up(
    hub: FakeHub, make_settings, make_service
) -> None:
    hub.add("acme/old")
    settings = make_settings(hf_source(hub, settle_s=1.0))
    service = make_service(settings)
    service.start()
    assert service.poll_source("hub").ok
    partial = ["config.json", "model-00001-of-00002.safetensors"]
    hub.add("acme/Uploading", files=partial)
    hub.add("acme/Abandoned", files=["README.md"])
    first = service.poll_source("hub")
    assert sorted(first.result.deferred) == [
        ("acme/Abandoned", "incomplete"),
        ("acme/Uploading", "incomplete"),
    ]
    sha = hub.commit("acme/Uploading", files=[*partial, "model-00002-of-00002.safetensors"])
    second = service.poll_source("hub")
    assert [r.split("@")[1] for r in second.result.released] == [sha]
    assert second.result.deferred == [("acme/Abandoned", "incomplete")]
    time.sleep(1.0)  # past the source's settle time
    third = service.poll_source("hub")
    assert third.result.skipped == [("acme/Abandoned", "incomplete")]
    assert service.poll_source("hub").result.skipped == []  # decided for good
    store = Store.for_settings(settings)
    assert store.known("hub")["acme/Abandoned"].outcome == "skipped"
    store.close()
    assert [e.revision for e in releases(settings, expected=1)] == [sha]
