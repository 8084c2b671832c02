"""A job's plan, made once before any work: its key from snapshots of the recipe and suite.

The key of DESIGN.md "Adoption tracks" hashes the track's recipe and suite. Reading those
files again later would let an edit made mid-job (a person tuning the recipe while a release
trains) train or score under a key that does not describe it. So the plan reads each file
once, keys the job by those bytes, and copies them into the job's folder (``plan/``); the
stages read the copies. A resumed job finds its copies in place: the key says their content.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.worker.job_spec import JobKey, JobSpec

if TYPE_CHECKING:
    from pipeline.eval import Suite
    from pipeline.train.recipe import Recipe

RECIPE_SNAPSHOT = "recipe.yaml"
SUITE_SNAPSHOT = "suite.jsonl"


@dataclass(frozen=True)
class JobPlan:
    """What the job is keyed by and where its files live."""

    key: JobKey
    work_dir: Path  # <state>/jobs/<key digest[:32]>
    recipe_path: Path  # the snapshot the key's recipe sha is of
    suite_path: Path  # the snapshot the key's suite sha is of
    recipe_origin: Path  # the track's recipe: its folder anchors relative data paths

    def recipe(self, profile: str | None) -> Recipe:
        """The snapshot's recipe (data paths relative to the track's recipe folder)."""
        from pipeline.train.recipe import parse_recipe

        text = self.recipe_path.read_bytes().decode("utf-8")
        return parse_recipe(text, self.recipe_origin).resolve(profile)

    def suite(self) -> Suite:
        from pipeline.eval import load_suite

        return load_suite(self.suite_path)


def _write_once(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def plan_job(spec: JobSpec) -> JobPlan:
    """Read the track's recipe and suite once, key the job by them, snapshot them."""
    recipe = Path(spec.track.recipe).read_bytes()
    suite = Path(spec.track.suite).read_bytes()
    key = JobKey(
        release_id=spec.release.release_id,
        track=spec.track.name,
        recipe_sha=hashlib.sha256(recipe).hexdigest(),
        suite_sha=hashlib.sha256(suite).hexdigest(),
    )
    work = spec.state_dir / "jobs" / key.digest[:32]
    snapshots = work / "plan"
    snapshots.mkdir(parents=True, exist_ok=True)
    _write_once(snapshots / RECIPE_SNAPSHOT, recipe)
    _write_once(snapshots / SUITE_SNAPSHOT, suite)
    return JobPlan(
        key=key,
        work_dir=work,
        recipe_path=snapshots / RECIPE_SNAPSHOT,
        suite_path=snapshots / SUITE_SNAPSHOT,
        recipe_origin=Path(spec.track.recipe).resolve(),
    )
