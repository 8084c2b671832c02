"""The job's plan (issue 19, item 7): the key is computed from snapshots of the recipe and
suite taken before any work, and the stages read those snapshots, so a recipe edited while a
job runs cannot train under a key that does not describe it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline.worker.job import Job
from pipeline.worker.job_events import JobEvents
from pipeline.worker.job_spec import job_key
from pipeline.worker.plan import plan_job
from tests.worker.helpers import build_release_dir, dir_release, job_spec, make_track
from uptake.mlflow_contract import RECIPE_SHA_TAG


def test_the_plan_keys_and_snapshots_what_it_read(tmp_path: Path) -> None:
    from tests.worker.test_service import release
    from uptake.settings import Settings

    track = make_track(tmp_path / "tracks", "legal")
    s = Settings(home=tmp_path / "home", kafka_bootstrap="127.0.0.1:9")
    spec = job_spec(s, release(), track, tracking_uri="http://127.0.0.1:9")
    plan = plan_job(spec)
    assert plan.key == job_key(spec)
    original = track.recipe.read_text()
    track.recipe.write_text(original.replace("max_steps: 4", "max_steps: 9"))
    assert "max_steps: 9" in track.recipe.read_text()
    assert plan.recipe_path.read_text() == original
    assert plan.recipe(None).sha256 == plan.key.recipe_sha
    assert plan.recipe(None).stages.sft.max_steps == 4
    assert plan.suite().sha256 == plan.key.suite_sha
    assert plan_job(spec).key != plan.key  # the edit is new work: a new key


class _EditsTheRecipe(JobEvents):
    """The job's events; when fetch starts, a person edits the track's recipe."""

    def __init__(self, spec: Any, recipe: Path) -> None:
        super().__init__(spec)
        self.recipe = recipe

    def stage(self, stage: str, *, force: bool = False, **fields: Any) -> None:
        if stage == "fetch" and fields.get("message") == "started":
            text = self.recipe.read_text()
            self.recipe.write_text(text.replace("max_steps: 4", "max_steps: 5"))
        super().stage(stage, force=force, **fields)


@pytest.mark.slow
@pytest.mark.one_backend
def test_a_recipe_edited_mid_job_trains_under_the_key_it_was_keyed_by(
    stack, drops: Path, unique, tmp_path: Path
) -> None:
    repo = f"acme/{unique('plan')}"
    build_release_dir(drops, repo)
    track = make_track(tmp_path / "tracks", "legal", unique("uptake-plan"))
    spec = job_spec(stack, dir_release(drops, repo), track)
    key = job_key(spec)
    mlflow.set_tracking_uri(spec.tracking_uri)
    job = Job(spec, events=_EditsTheRecipe(spec, track.recipe))
    try:
        assert job.run().ok
    finally:
        job.close()
    assert "max_steps: 5" in track.recipe.read_text()  # the edit happened mid-job
    c = MlflowClient(tracking_uri=stack.tracking_uri)
    assert job.run_id is not None
    run = c.get_run(job.run_id)
    assert run.data.tags[RECIPE_SHA_TAG] == key.recipe_sha  # trained what the key says
    assert run.data.params["recipe.sha256"] == key.recipe_sha
