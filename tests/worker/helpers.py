"""Builders for the worker tests: tiny tracks (data, recipe, suite), releases and job specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.worker.job_spec import JobSpec
from pipeline.worker.trust import TrustedSource
from tests.train.helpers import corpus, memo_rows, write_jsonl, write_recipe
from uptake.events import ReleaseDetected, release_id
from uptake.settings import Settings
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model
from uptake.tracks import Track
from uptake.watcher_config import DirSourceConfig
from watcher.sources.dirs import content_hash as watcher_content_hash

SUITE_TASKS = [
    ("imm-1", "immigration", "Write a memo on a immigration matter for Zed.", "INA 212(a)"),
    ("tax-1", "tax", "Write a memo on a tax matter for Yara.", "IRC 6501"),
    ("emp-1", "employment", "Write a memo on a employment matter for Xavi.", "Title VII"),
]

TINY_SFT = {
    "max_steps": 4,
    "batch_size": 4,
    "save_steps": 2,
    "learning_rate": 5e-3,
}


def suite_rows(tasks: list[tuple[str, str, str, str]] = SUITE_TASKS) -> list[dict[str, Any]]:
    return [
        {
            "id": tid,
            "practice_area": area,
            "max_new_tokens": 6,
            "messages": [{"role": "user", "content": prompt}],
            "criteria": [
                {"id": "c1", "description": "rule", "check": {"type": "contains", "value": rule}},
                {
                    "id": "c2",
                    "description": "no promise",
                    "check": {"type": "not_contains", "value": "guarantee"},
                },
            ],
        }
        for tid, area, prompt, rule in tasks
    ]


def make_track(
    root: Path,
    name: str = "legal",
    registered_model: str | None = None,
    *,
    train_rows: list[dict[str, Any]] | None = None,
    suite: list[dict[str, Any]] | None = None,
    suite_path: Path | None = None,
    sft: dict[str, Any] | None = None,
    hardware: dict[str, Any] | None = None,
) -> Track:
    """A track directory with training data, a tiny recipe and a held-out suite."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    write_jsonl(directory / "train.jsonl", train_rows if train_rows is not None else memo_rows(32))
    extra = {"hardware": hardware} if hardware else {}
    recipe = write_recipe(
        directory, max_length=96, stages={"sft": {**TINY_SFT, **(sft or {})}}, **extra
    )
    if suite_path is None:
        suite_path = directory / "suite.jsonl"
        suite_path.write_text(
            "".join(json.dumps(r) + "\n" for r in (suite or suite_rows())), encoding="utf-8"
        )
    return Track(
        name=name,
        registered_model=registered_model or f"uptake-{name}",
        recipe=recipe,
        suite=suite_path,
    )


def build_release_dir(drops: Path, repo_id: str, spec: TinyModelSpec | None = None) -> Path:
    return build_tiny_model(drops / repo_id, spec or TinyModelSpec(), corpus=corpus(memo_rows(64)))


def dir_release(drops: Path, repo_id: str, source: str = "drops") -> ReleaseDetected:
    """The release the watcher's dir source would publish for ``drops/repo_id``."""
    folder = drops / repo_id
    files = tuple(
        p.relative_to(folder).as_posix()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    revision = watcher_content_hash(folder, files)
    return ReleaseDetected(
        producer="test-watcher",
        release_id=release_id(source, repo_id, revision),
        source=source,
        repo_id=repo_id,
        revision=revision,
        endpoint=str(folder),
    )


def drops_source(drops: Path, name: str = "drops") -> DirSourceConfig:
    """The configured dir source ``dir_release`` releases come from."""
    return DirSourceConfig(name=name, kind="dir", path=drops)


def source_of(release: ReleaseDetected) -> TrustedSource:
    """The configured source a test release comes from, as ``spec_for`` would resolve it: a
    dir source rooted two levels above the drop, or a hub source at the event's endpoint."""
    endpoint = release.endpoint or "https://huggingface.co"
    if Path(endpoint).is_absolute():
        root = Path(endpoint).resolve().parents[1]
        return TrustedSource(name=release.source, kind="dir", endpoint=str(root))
    return TrustedSource(name=release.source, kind="hf", endpoint=endpoint)


def job_spec(settings: Settings, release: ReleaseDetected, track: Track, **over: Any) -> JobSpec:
    fields: dict[str, Any] = {
        "release": release,
        "source": source_of(release),
        "track": track,
        "tracking_uri": settings.tracking_uri,
        "state_dir": settings.state_dir,
        "kafka_bootstrap": settings.kafka_bootstrap,
        "topics": settings.kafka.topics,
        "device": "cpu",
        "experiment": "uptake-worker-test",
        "lease_ttl_s": 6.0,
        "heartbeat_s": 1.0,
        "transient_retries": 2,
        "retry_backoff_s": 0.2,
        "progress_interval_s": 0.0,
        "worker": "w-test",
        "eval_batch_size": 4,
    }
    fields.update(over)
    return JobSpec(**fields)
