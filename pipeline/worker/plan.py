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
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.worker.job_spec import JobKey, JobSpec
from uptake.retention import job_dir, jobs_dir

if TYPE_CHECKING:
    from pipeline.eval.suites import AnySuite
    from pipeline.train.recipe import Recipe

RECIPE_SNAPSHOT = "recipe.yaml"
SUITE_SNAPSHOT = "suite.jsonl"
SUITE_DIR_SNAPSHOT = "suite"  # an agentic suite: a copy of the task folder, documents included


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

    def suite(self) -> AnySuite:
        from pipeline.eval.suites import load_suite

        return load_suite(self.suite_path)


def _write_once(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _suite_dir_snapshot(suite_dir: Path, jobs: Path) -> tuple[str, Path]:
    """Copy an agentic suite's folder once, then hash the copy: the sha is of the files the
    stages will read, whatever is edited in the track's folder meanwhile."""
    from pipeline.eval.suites import suite_sha256

    jobs.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".plan-", dir=jobs))
    copy = tmp / SUITE_DIR_SNAPSHOT
    shutil.copytree(suite_dir, copy, symlinks=True)
    return suite_sha256(copy), copy


def plan_job(spec: JobSpec) -> JobPlan:
    """Read the track's recipe and suite once, key the job by them, snapshot them."""
    recipe = Path(spec.track.recipe).read_bytes()
    suite_src = Path(spec.track.suite)
    jobs = jobs_dir(spec.state_dir)
    copied: Path | None = None
    if suite_src.is_dir():
        suite_sha, copied = _suite_dir_snapshot(suite_src, jobs)
    else:
        suite = suite_src.read_bytes()
        suite_sha = hashlib.sha256(suite).hexdigest()
    key = JobKey(
        release_id=spec.release.release_id,
        track=spec.track.name,
        recipe_sha=hashlib.sha256(recipe).hexdigest(),
        suite_sha=suite_sha,
    )
    work = job_dir(spec.state_dir, key.digest)
    snapshots = work / "plan"
    snapshots.mkdir(parents=True, exist_ok=True)
    _write_once(snapshots / RECIPE_SNAPSHOT, recipe)
    if copied is None:
        suite_path = snapshots / SUITE_SNAPSHOT
        _write_once(suite_path, suite)
    else:
        suite_path = snapshots / SUITE_DIR_SNAPSHOT
        if not suite_path.is_dir():  # a resumed job's copy is in place: the key says its content
            os.replace(copied, suite_path)
        shutil.rmtree(copied.parent, ignore_errors=True)
    return JobPlan(
        key=key,
        work_dir=work,
        recipe_path=snapshots / RECIPE_SNAPSHOT,
        suite_path=suite_path,
        recipe_origin=Path(spec.track.recipe).resolve(),
    )
