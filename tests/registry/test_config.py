"""Registry and alert configuration: the example loads; secrets cannot be put in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.cli_helpers import ROOT
from uptake.errors import ConfigError
from uptake.settings import load_settings


def test_example_config_loads() -> None:
    settings = load_settings(ROOT / "examples" / "registry.yaml")
    assert settings.registry.gate_for("uptake-legal").mode == "manual"
    assert settings.registry.gate_for("other").mode == "auto"
    assert set(settings.alerts.channels) == {"team-slack", "oncall", "audit-log"}
    assert settings.alerts.channels["oncall"].min_severity == "error"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (  # a Slack URL is a secret: there is no field for it, only its env var name
            "alerts:\n  channels:\n    s: {type: slack, url: 'https://hooks.slack.com/x'}\n",
            "alerts.channels.s.slack.url: unknown field",
        ),
        (
            "alerts:\n  channels:\n    p: {type: pagerduty, routing_key: abc}\n",
            "alerts.channels.p.pagerduty.routing_key: unknown field",
        ),
        (
            "alerts:\n  channels:\n    w: {type: webhook, url: 'http://x', url_env: X}\n",
            "set exactly one of url and url_env",
        ),
        ("alerts:\n  channels:\n    e: {type: email}\n", "alerts.channels.e"),
        ("registry:\n  gate: {mode: yolo}\n", "registry.gate.mode"),
        ("registry:\n  models: {m: {area_tolerance: 2}}\n", "registry.models.m.area_tolerance"),
        (
            "registry:\n  reconcile_interval: 5\n",
            "registry.reconcile_interval: durations are seconds: write reconcile_interval_s: 5",
        ),
    ],
)
def test_bad_registry_config_is_one_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "uptake.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_gate_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPTAKE_REGISTRY__GATE__MODE", "manual")
    monkeypatch.setenv("UPTAKE_REGISTRY__GATE__AREA_TOLERANCE", "0.1")
    settings = load_settings()
    assert settings.registry.gate.mode == "manual"
    assert settings.registry.gate.area_tolerance == 0.1
