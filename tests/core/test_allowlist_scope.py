"""The remote-code allow-list is scoped to a source (issue 19, item 4).

``hub:trusted-org/*`` trusts that org on the source named ``hub``; a bare ``trusted-org/*``
trusts it on hub (``hf``) sources only, so a drop folder ``drops/trusted-org/x`` never borrows
a hub org's trust. The worker scopes the list once, where the source is known
(``spec_for``); serving scopes it by the version's tags.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.worker.job_spec import spec_for
from tests.train.helpers import REMOTE_CONFIG, REMOTE_MODELING
from uptake.events import ReleaseDetected, release_id
from uptake.mlflow_contract import BASE_MODEL_TAG, RELEASE_ID_TAG
from uptake.models import ModelOrigin, decide_remote_code, is_allowlisted, scope_allowlist
from uptake.models.remote_code import origin_of_tags
from uptake.settings import Settings
from uptake.tracks import Track
from uptake.watcher_config import DirSourceConfig, HfSourceConfig

HUB = ModelOrigin(source="hub", kind="hf", repo_id="trusted-org/x")
MIRROR = ModelOrigin(source="mirror", kind="hf", repo_id="trusted-org/x")
DROP = ModelOrigin(source="drops", kind="dir", repo_id="trusted-org/x")
UNKNOWN = ModelOrigin(source="gone", kind=None, repo_id="trusted-org/x")


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A model folder that asks for its own code (no weights: the decision reads files)."""
    folder = tmp_path / "trusted-org" / "x"
    folder.mkdir(parents=True)
    config = {
        "model_type": "tinyfoo",
        "auto_map": {
            "AutoConfig": "configuration_tinyfoo.TinyFooConfig",
            "AutoModelForCausalLM": "modeling_tinyfoo.TinyFooForCausalLM",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_tinyfoo.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_tinyfoo.py").write_text(REMOTE_MODELING)
    return folder


def test_a_bare_entry_trusts_hub_sources_only(remote: Path) -> None:
    bare = ["trusted-org/*"]
    assert is_allowlisted(bare, None, remote, HUB)
    assert is_allowlisted(bare, None, remote, MIRROR)  # any hf-kind source
    assert not is_allowlisted(bare, None, remote, DROP)  # the defect: a drop borrowed it
    assert not is_allowlisted(bare, None, remote, UNKNOWN)


def test_a_scoped_entry_trusts_its_source_only(remote: Path) -> None:
    assert is_allowlisted(["hub:trusted-org/*"], None, remote, HUB)
    assert not is_allowlisted(["hub:trusted-org/*"], None, remote, MIRROR)
    assert not is_allowlisted(["hub:trusted-org/*"], None, remote, DROP)
    assert is_allowlisted(["drops:trusted-org/*"], None, remote, DROP)
    assert not is_allowlisted(["drops:trusted-org/*"], None, remote, HUB)
    assert not is_allowlisted(["hub:trusted-org/*"], "trusted-org/x", remote)  # no source known


def test_a_path_entry_matches_the_model_directory_only(remote: Path) -> None:
    by_path = [str(remote.parent) + "/*"]
    assert is_allowlisted(by_path, None, remote, DROP)
    assert not is_allowlisted(["*"], None, remote, DROP)  # "*" is a repo pattern, not a path
    assert not is_allowlisted(by_path, "trusted-org/x", remote.parent.parent / "other")


def test_the_decision_names_the_source_when_it_refuses(remote: Path) -> None:
    refused = decide_remote_code(remote, ["trusted-org/*"], origin=DROP)
    assert refused.refused and "'drops:trusted-org/x' is not in" in refused.reason
    assert "hub:org/*" in refused.reason
    assert decide_remote_code(remote, ["trusted-org/*"], origin=HUB).trust_remote_code


entries = st.lists(
    st.sampled_from(
        ["trusted-org/*", "hub:trusted-org/*", "drops:trusted-org/*", "mirror:*", "other/*", "*"]
    ),
    max_size=4,
)
origins = st.sampled_from([HUB, MIRROR, DROP, UNKNOWN])


@given(entries, origins)
def test_scoping_once_then_matching_the_repo_id_is_the_rule(entry: list[str], o) -> None:
    """What the worker does (scope in ``spec_for``, match the repo id later) decides as the
    rule does with the origin at hand."""
    folder = Path("/nonexistent/model")
    scoped = scope_allowlist(entry, o.source, o.kind)
    assert is_allowlisted(scoped, o.repo_id, folder) == is_allowlisted(entry, None, folder, o)


def _settings(tmp_path: Path, allowlist: list[str]) -> tuple[Settings, Track]:
    (tmp_path / "drops" / "trusted-org" / "x").mkdir(parents=True)
    (tmp_path / "r.yaml").write_text("x")
    (tmp_path / "s.jsonl").write_text("{}\n")
    track = Track(
        name="t", registered_model="m", recipe=tmp_path / "r.yaml", suite=tmp_path / "s.jsonl"
    )
    settings = Settings(
        home=tmp_path / "home",
        trust_remote_code_allowlist=allowlist,
        sources=[
            HfSourceConfig(name="hub", kind="hf", authors=["trusted-org"]),
            DirSourceConfig(name="drops", kind="dir", path=tmp_path / "drops"),
        ],
        tracks=[track],
    )
    return settings, track


def _release(source: str, endpoint: str | None) -> ReleaseDetected:
    return ReleaseDetected(
        release_id=release_id(source, "trusted-org/x", "c" * 40),
        source=source,
        repo_id="trusted-org/x",
        revision="c" * 40,
        endpoint=endpoint,
    )


def test_the_worker_does_not_trust_a_drop_named_like_an_allowlisted_org(
    tmp_path: Path, remote: Path
) -> None:
    """Preflight, training and evaluation all decide from ``spec.allowlist`` and the
    release's repo id: a drop gets none of the hub's entries."""
    settings, track = _settings(tmp_path, ["trusted-org/*", "drops:vetted/*"])
    drop = spec_for(
        settings,
        _release("drops", str(tmp_path / "drops" / "trusted-org" / "x")),
        track,
        worker="w",
    )
    assert drop.allowlist == ["vetted/*"]
    assert decide_remote_code(remote, drop.allowlist, drop.release.repo_id).refused
    hub = spec_for(settings, _release("hub", None), track, worker="w")
    assert hub.allowlist == ["trusted-org/*"]
    assert decide_remote_code(remote, hub.allowlist, hub.release.repo_id).trust_remote_code


def test_a_versions_origin_comes_from_its_tags() -> None:
    tags = {RELEASE_ID_TAG: "drops:trusted-org/x@abc", BASE_MODEL_TAG: "trusted-org/x"}
    assert origin_of_tags(tags, {"drops": "dir"}) == DROP
    assert origin_of_tags(tags, {}) == ModelOrigin(source="drops", repo_id="trusted-org/x")
    assert origin_of_tags({BASE_MODEL_TAG: "a/b"}, {}) == ModelOrigin(repo_id="a/b")
    assert origin_of_tags({}, {}) == ModelOrigin()
