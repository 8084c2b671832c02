"""Bad configuration: one clear line naming the field, exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.cli_helpers import run_uptake
from uptake.settings import load_settings

CASES = {
    "missing_file": (None, {}, "config file not found"),
    "yaml_syntax": ("kafka:\n  partitions: [1, 2\n", {}, "YAML syntax error"),
    "not_a_mapping": ("- just\n- a list\n", {}, "top level must be a mapping"),
    "unknown_key": ("kafak:\n  partitions: 3\n", {}, "kafak: unknown field"),
    "nested_unknown_key": ("kafka:\n  partitons: 3\n", {}, "kafka.partitons: unknown field"),
    "wrong_type": (
        "kafka:\n  partitions: many\n",
        {},
        "kafka.partitions: Input should be a valid integer",
    ),
    "out_of_range": (
        "mlflow:\n  port: 70000\n",
        {},
        "mlflow.port: Input should be less than or equal to 65535",
    ),
    "not_utf8": (b"kafka:\n  client_id: caf\xe9\n", {}, "not UTF-8 text (byte 23)"),
    "bad_log_level": ("log_level: LOUD\n", {}, "log_level: Input should be"),
    "secret_in_yaml": (
        "judge:\n  api_key: sk-123\n",
        {},
        "judge.api_key: secrets are read from the environment only (UPTAKE_JUDGE__API_KEY)",
    ),
    "bad_env_value": (
        "",
        {"UPTAKE_KAFKA__PARTITIONS": "0"},
        "kafka.partitions: Input should be greater than or equal to 1",
    ),
    "bad_bootstrap": (
        "",
        {"UPTAKE_KAFKA_BOOTSTRAP": "localhost"},
        "kafka_bootstrap: Value error, expected host:port",
    ),
    "secret_in_yaml_other_case": (
        "HF_TOKEN: hf_leak\n",
        {},
        "hf_token: secrets are read from the environment only (UPTAKE_HF_TOKEN)",
    ),
    "env_not_json": (
        "",
        {"UPTAKE_SOURCES": "[{"},
        "UPTAKE_SOURCES: not valid JSON",
    ),
    "env_section_not_json": (
        "",
        {"UPTAKE_KAFKA": "{bad"},
        "UPTAKE_KAFKA: not valid JSON",
    ),
    "short_webhook_secret": (
        "",
        {"UPTAKE_WATCHER__WEBHOOK_SECRET": "hunter2"},
        "watcher.webhook_secret: Value error, must be at least 8 characters",
    ),
    "config_env_missing": (
        None,
        {"UPTAKE_CONFIG": "/nonexistent/uptake.yaml"},
        "config file not found: /nonexistent/uptake.yaml",
    ),
    "duration_as_text": (
        "watcher:\n  backoff_max_s: 15m\n",
        {},
        "watcher.backoff_max_s: durations are seconds: write backoff_max_s: 900 (got '15m')",
    ),
    "duration_key_without_unit": (
        "sources:\n  - {name: hub, kind: hf, authors: [acme], interval: 5m}\n",
        {},
        "sources.0.hf.interval: durations are seconds: write interval_s: 300",
    ),
    "duration_key_without_unit_in_registry": (
        "registry:\n  reconcile_interval: 30\n",
        {},
        "registry.reconcile_interval: durations are seconds: write reconcile_interval_s: 30",
    ),
    "duration_key_without_unit_in_env": (
        "",
        {"UPTAKE_WATCHER__OUTBOX_RETRY": "1h"},
        "watcher.outbox_retry: durations are seconds: write outbox_retry_s: 3600",
    ),
    "kafka_duration_key_without_unit": (
        "kafka:\n  session_timeout: 10s\n",
        {},
        "kafka.session_timeout: durations are milliseconds: write session_timeout_ms: 10000",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_is_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    text, env, fragment = CASES[case]
    args = ["status"]
    if text is not None:
        path = tmp_path / "uptake.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        args += ["--config", str(path)]
    elif "UPTAKE_CONFIG" not in env:
        args += ["--config", str(tmp_path / "absent.yaml")]
    result = run_uptake(*args, home=tmp_path, **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_precedence_defaults_yaml_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "uptake.yaml"
    path.write_text("kafka:\n  partitions: 6\n  client_id: from-yaml\nmlflow:\n  port: 5500\n")
    monkeypatch.setenv("UPTAKE_KAFKA__PARTITIONS", "9")
    monkeypatch.setenv("UPTAKE_JUDGE__API_KEY", "sk-env")
    s = load_settings(path)
    assert s.kafka.partitions == 9  # env beats YAML
    assert s.kafka.client_id == "from-yaml"  # YAML beats defaults
    assert s.mlflow.port == 5500 and s.tracking_uri == "http://127.0.0.1:5500"
    assert s.judge.api_key is not None and s.judge.api_key.get_secret_value() == "sk-env"
    assert "sk-env" not in repr(s)
    monkeypatch.setenv("UPTAKE_CONFIG", str(path))
    assert load_settings().kafka.client_id == "from-yaml"


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_settings(path).kafka.partitions == 3


def test_a_bad_secret_is_named_but_never_echoed(tmp_path: Path) -> None:
    env = {"UPTAKE_MLFLOW__WEBHOOK_SECRET": "hunter2", "UPTAKE_KAFKA__PARTITIONS": "0"}
    result = run_uptake("status", home=tmp_path, **env)
    assert result.returncode == 2
    assert "mlflow.webhook_secret: Value error, must be at least 8 characters" in result.stderr
    assert "(got '0')" in result.stderr  # other fields still show what was given
    assert "hunter2" not in result.stderr + result.stdout
