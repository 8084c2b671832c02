"""``uptake config show``: the settings in effect, each with its source, secrets masked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.core.cli_helpers import run_uptake
from uptake.config_show import MASK, effective_settings

SECRET = "sk-not-for-your-eyes"
CONFIG = """\
kafka:
  partitions: 5
  topics: {runs: file.runs}
registry:
  state_url: postgresql://uptake:db-password@db:5432/uptake
sources:
  - {name: hub, kind: hf, authors: [Qwen], interval_s: 120}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "uptake.yaml"
    path.write_text(CONFIG)
    return path


def test_show_json_tells_default_file_and_env_apart_and_masks_secrets(
    tmp_path: Path, config: Path
) -> None:
    result = run_uptake(
        *("config", "show", "--config", str(config), "--json"),
        home=tmp_path,
        UPTAKE_KAFKA__PARTITIONS="7",  # env wins over the file's 5
        UPTAKE_JUDGE__API_KEY=SECRET,
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and "db-password" not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["config"] == str(config)
    settings = shown["settings"]
    assert settings["kafka.partitions"] == {"value": 7, "source": "env"}
    assert settings["kafka.topics.runs"] == {"value": "file.runs", "source": "file"}
    assert settings["kafka.topics.dlq"] == {"value": "uptake.dlq", "source": "default"}
    assert settings["judge.api_key"] == {"value": MASK, "source": "env"}
    assert settings["hf_token"] == {"value": None, "source": "default"}
    assert settings["registry.state_url"] == {
        "value": f"postgresql://uptake:{MASK}@db:5432/uptake",
        "source": "file",
    }
    assert settings["sources.0.interval_s"] == {"value": 120.0, "source": "file"}
    assert settings["sources.0.limit"] == {"value": 100, "source": "default"}
    assert settings["home"]["source"] == "env"  # the test's UPTAKE_HOME


def test_show_prints_a_table_with_each_source(tmp_path: Path, config: Path) -> None:
    result = run_uptake(
        *("config", "show", "--config", str(config)),
        home=tmp_path,
        UPTAKE_KAFKA__PARTITIONS="7",
        UPTAKE_HF_TOKEN=SECRET,
        COLUMNS="200",
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout
    rows = {
        cells[0]: cells[1:]
        for line in result.stdout.splitlines()
        if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 3
    }
    assert f"config: {config}" in result.stdout
    assert rows["kafka.partitions"] == ["7", "env"]
    assert rows["kafka.topics.runs"] == ["file.runs", "file"]
    assert rows["kafka.client_id"] == ["uptake", "default"]
    assert rows["hf_token"] == [MASK, "env"]


def test_show_of_an_invalid_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  partitons: 3\n")
    result = run_uptake("config", "show", "--config", str(bad), home=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"error: invalid config {bad}: kafka.partitons: unknown field"


def test_a_list_from_env_replaces_the_files_and_its_unset_keys_are_defaults(
    monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    for var in [v for v in os.environ if v.startswith("UPTAKE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("UPTAKE_CONFIG", str(config))  # no --config: UPTAKE_CONFIG is the file
    monkeypatch.setenv(
        "UPTAKE_SOURCES", json.dumps([{"name": "drops", "kind": "dir", "path": "/m"}])
    )
    shown = effective_settings()
    by_key = {e.key: (e.value, e.source) for e in shown.entries}
    assert shown.config == str(config)
    assert by_key["sources.0.name"] == ("drops", "env")
    assert by_key["sources.0.interval_s"] == (60.0, "default")  # not the file's 120
    assert "sources.1.name" not in by_key
    assert by_key["kafka.partitions"] == (5, "file")
