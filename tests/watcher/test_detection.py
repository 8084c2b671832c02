"""Detection end to end: fake Hub over real HTTP, real huggingface_hub client, real broker."""

from __future__ import annotations

from tests.watcher.conftest import events, hf_source, metric, releases
from tests.watcher.fake_hub import FakeHub
from uptake.bus import EventProducer
from uptake.events import Event, release_id
from watcher.store import Store


def test_new_repo_gives_exactly_one_event(hub: FakeHub, make_settings, make_service) -> None:
    for i in range(3):
        hub.add(f"acme/old-{i}")
    hub.add("other/old")
    settings = make_settings(hf_source(hub, authors=["acme", "other"]))
    service = make_service(settings)
    service.start()

    first = service.poll_source("hub")
    assert first.ok and first.result.first_run and first.result.baseline == 4
    assert first.result.released == []

    new = hub.add("acme/Fresh-7B", license="mit")
    hub.add("acme/Fresh-7B-GGUF", extra_tags=["gguf"])
    hub.add("other/image-gen", pipeline_tag="text-to-image")
    hub.clear_log()
    second = service.poll_source("hub")
    assert second.ok
    assert second.result.released == [release_id("hub", "acme/Fresh-7B", new.sha)]
    assert sorted(second.result.skipped) == [
        ("acme/Fresh-7B-GGUF", "quantized"),
        ("other/image-gen", "pipeline_tag"),
    ]
    # one list request per author; model_info only for the one candidate, at its sha
    assert len(hub.list_requests()) == 2
    assert [r.path for r in hub.info_requests()] == [
        f"/api/models/acme/Fresh-7B/revision/{new.sha}"
    ]
    listed = hub.list_requests()[0].query
    assert listed["sort"] == ["createdAt"] and listed["limit"] == ["100"]
    assert {"sha", "pipeline_tag", "tags"} <= set(listed["expand"])

    third = service.poll_source("hub")
    assert third.ok and third.result.released == [] and third.result.skipped == []

    got = events(settings, expected=1)
    assert len(got) == 1
    key, event = got[0]
    assert key == "acme/Fresh-7B"
    assert event.release_id == f"hub:acme/Fresh-7B@{new.sha}"
    assert (event.source, event.revision, event.endpoint) == ("hub", new.sha, hub.url)
    assert (event.license, event.pipeline_tag, event.library) == (
        "mit",
        "text-generation",
        "transformers",
    )
    assert event.num_parameters == 1_500_000_000 and event.producer == "watcher"
    assert metric(service, "uptake_watcher_releases_published_total", source="hub") == 1
    assert metric(service, "uptake_watcher_skips_total", source="hub", reason="quantized") == 1
    assert metric(service, "uptake_watcher_detection_latency_seconds_count", source="hub") == 1


class CrashAfterProduce:
    """Produces for real, then dies before the caller can mark the row published."""

    def __init__(self, real: EventProducer) -> None:
        self.real = real
        self.produced = 0

    def publish(self, event: Event, topic: str | None = None, timeout_s: float = 30.0) -> int:
        self.real.publish(event, topic, timeout_s)
        self.produced += 1
        raise RuntimeError("killed between produce and mark")


def test_restart_after_produce_before_mark_republishes_same_release(
    hub: FakeHub, make_settings, make_service
) -> None:
    hub.add("acme/old")
    settings = make_settings(hf_source(hub))
    real = EventProducer(settings, "test")
    crashing = CrashAfterProduce(real)
    first = make_service(settings, producer=crashing)
    first.start()
    assert first.poll_source("hub").ok  # baseline
    repo = hub.add("acme/new-model")
    outcome = first.poll_source("hub")
    assert outcome.ok and len(outcome.result.released) == 1
    assert crashing.produced == 1
    store = Store.for_settings(settings)
    assert [p.release_id for p in store.pending()] == outcome.result.released  # still pending
    first.close()

    second = make_service(settings)  # "restart": same store, a working producer
    second.start()  # re-publishes what was pending
    assert store.pending() == []
    again = second.poll_source("hub")
    assert again.ok and again.result.released == []

    got = releases(settings, expected=2)
    assert len(got) == 2  # the same release produced twice: at-least-once, consumers dedupe
    rid = release_id("hub", "acme/new-model", repo.sha)
    assert {e.release_id for e in got} == {rid}
    assert len({e.event_id for e in got}) == 1  # the very same event, not a second release
    rows = store.release_rows()
    assert [(r["release_id"], r["status"]) for r in rows] == [(rid, "published")]
    store.close()
    real.close()


def test_first_run_records_baseline_and_backfills_newest(
    hub: FakeHub, make_settings, make_service
) -> None:
    hub.page_size = 2  # first run follows every page of the listing
    for i in range(4):
        hub.add(f"acme/base-{i}")
    hub.add("acme/newest-GGUF", extra_tags=["gguf"])
    settings = make_settings(hf_source(hub, backfill=2))
    service = make_service(settings)
    service.start()
    outcome = service.poll_source("hub")
    assert outcome.ok and outcome.result.first_run
    assert len(hub.list_requests()) == 3  # 5 repos, pages of 2
    assert "limit" not in hub.list_requests()[0].query
    published = {e.repo_id for e in releases(settings, expected=2)}
    assert published == {"acme/base-3", "acme/base-2"}  # newest accepted, the GGUF skipped
    assert outcome.result.skipped == [("acme/newest-GGUF", "quantized")]
    assert outcome.result.baseline == 2
    assert service.poll_source("hub").result.released == []


def test_partial_listing_publishes_nothing(hub: FakeHub, make_settings, make_service) -> None:
    hub.page_size = 2
    for i in range(5):
        hub.add(f"acme/base-{i}")
    hub.add("other/base")
    settings = make_settings(hf_source(hub, authors=["acme", "other"]))
    service = make_service(settings)
    service.start()
    # first run: page 2 of acme breaks -> no baseline at all
    hub.fail(status=502, match=lambda path, query: "cursor" in query)
    failed = service.poll_source("hub")
    assert not failed.ok and failed.fault.kind == "server_error"
    store = Store.for_settings(settings)
    assert store.known("hub") == {}
    assert not service.pollers["hub"].initialized()
    assert service.poll_source("hub").ok  # baseline now
    assert len(store.known("hub")) == 6

    # later: acme lists fine and has a new repo, but other's listing fails -> nothing at all
    hub.add("acme/new-one")
    hub.fail(status=500, match=lambda path, query: query.get("author") == ["other"])
    assert not service.poll_source("hub").ok
    assert "acme/new-one" not in store.known("hub")
    assert store.pending() == [] and store.release_rows() == []
    ok = service.poll_source("hub")
    assert ok.ok and len(ok.result.released) == 1
    store.close()


def test_catch_up_when_more_new_repos_than_the_window(
    hub: FakeHub, make_settings, make_service
) -> None:
    for i in range(3):
        hub.add(f"acme/base-{i}")
    settings = make_settings(hf_source(hub, limit=2))
    service = make_service(settings)
    service.start()
    assert service.poll_source("hub").ok
    for i in range(3):
        hub.add(f"acme/burst-{i}")
    hub.clear_log()
    outcome = service.poll_source("hub")
    assert outcome.ok and len(outcome.result.released) == 3
    assert [r.query.get("limit") for r in hub.list_requests()] == [["2"], None]


def test_new_revision_is_a_release_only_where_updates_are_tracked(
    hub: FakeHub, make_settings, make_service
) -> None:
    hub.add("acme/model")
    settings = make_settings(
        hf_source(hub, name="pinned"), hf_source(hub, name="updates", track_updates=True)
    )
    service = make_service(settings)
    service.start()
    assert all(o.ok for o in service.run_once())
    sha = hub.commit("acme/model", params=2_000_000_000)
    hub.clear_log()
    pinned, updates = service.poll_source("pinned"), service.poll_source("updates")
    assert pinned.ok and pinned.result.released == []
    assert updates.result.released == [release_id("updates", "acme/model", sha)]
    sorts = {r.query["sort"][0] for r in hub.list_requests()}
    assert sorts == {"createdAt", "lastModified"}
    (event,) = releases(settings, expected=1)
    assert event.num_parameters == 2_000_000_000 and event.revision == sha


def test_adding_an_author_baselines_its_existing_repos(
    hub: FakeHub, make_settings, make_service
) -> None:
    hub.add("acme/old")
    for i in range(3):
        hub.add(f"newco/existing-{i}")
    service = make_service(make_settings(hf_source(hub)))
    service.start()
    assert service.poll_source("hub").ok
    widened = make_settings(hf_source(hub, authors=["acme", "newco"]))
    service = make_service(widened)  # restarted with one more org in the config
    hub.clear_log()
    outcome = service.poll_source("hub")
    assert outcome.ok and outcome.result.released == [] and outcome.result.baseline == 3
    newco = [r for r in hub.list_requests() if r.query["author"] == ["newco"]]
    assert "limit" not in newco[0].query  # listed exhaustively, like a first run
    fresh = hub.add("newco/fresh")
    assert service.poll_source("hub").result.released == [
        release_id("hub", "newco/fresh", fresh.sha)
    ]
    assert [e.repo_id for e in releases(widened, expected=1)] == ["newco/fresh"]


def test_token_is_sent_and_marks_travel_in_the_published_event(
    hub: FakeHub, make_settings, make_service, monkeypatch
) -> None:
    """A gated repo is adopted when the source has a token (sent on every request), and a
    custom-code repo is published marked requires_remote_code (the pipeline refuses it
    unless allow-listed)."""
    monkeypatch.setenv("ACME_HUB_TOKEN", "hf_test_token_123")
    hub.add("acme/old")
    settings = make_settings(hf_source(hub, token_env="ACME_HUB_TOKEN"))
    service = make_service(settings)
    service.start()
    assert service.poll_source("hub").ok
    gated = hub.add("acme/Gated-7B", gated="manual")
    custom = hub.add(
        "acme/Custom-7B", config={"architectures": ["X"], "auto_map": {"AutoModel": "m.X"}}
    )
    hub.clear_log()
    outcome = service.poll_source("hub")
    assert outcome.ok and outcome.result.skipped == []
    assert sorted(outcome.result.released) == sorted(
        [
            release_id("hub", "acme/Gated-7B", gated.sha),
            release_id("hub", "acme/Custom-7B", custom.sha),
        ]
    )
    assert hub.requests_for() and all(
        r.authorization == "Bearer hf_test_token_123" for r in hub.requests_for()
    )
    published = {e.repo_id: e for e in releases(settings, expected=2)}
    assert published["acme/Gated-7B"].gated and not published["acme/Gated-7B"].requires_remote_code
    assert published["acme/Custom-7B"].requires_remote_code
