"""Serving settings: what is served, the API key from the environment, refused values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.service import ServingService, refuse_open_exposure, served_models
from uptake.errors import ConfigError
from uptake.serving_config import ServingSettings
from uptake.settings import Settings
from uptake.tracks import Track


def test_what_is_served(tmp_path: Path) -> None:
    plain = Settings(home=tmp_path)
    assert served_models(plain) == ["uptake-legal"]
    assert served_models(plain, "other") == ["other"]
    files = {"recipe": tmp_path / "r.yaml", "suite": tmp_path / "s.jsonl"}
    tracked = Settings(
        home=tmp_path,
        tracks=[
            Track(name="a", registered_model="firm-a", **files),
            Track(name="b", registered_model="firm-b", **files),
        ],
    )
    assert served_models(tracked) == ["firm-a", "firm-b"]
    chosen = tracked.model_copy(update={"serving": ServingSettings(models=["firm-b"])})
    assert served_models(chosen) == ["firm-b"]


def test_the_api_key_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServingSettings().api_key() is None
    cfg = ServingSettings(api_key_env="SERVING_KEY_FOR_TEST")
    monkeypatch.delenv("SERVING_KEY_FOR_TEST", raising=False)
    with pytest.raises(ConfigError, match="SERVING_KEY_FOR_TEST"):
        cfg.api_key()  # configured but unset: refuse to start open
    monkeypatch.setenv("SERVING_KEY_FOR_TEST", "k3y")
    assert cfg.api_key() == "k3y"


@pytest.mark.parametrize(
    "bad",
    [
        {"api_key_env": "not a name"},
        {"engine": "tgi"},
        {"port": 70000},
        {"max_batch": 0},
        {"reconcile_interval_s": "5m"},
        {"vllm": {"extra_args": ["--model", "x"]}},
        {"unknown": 1},
    ],
)
def test_bad_values_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ServingSettings.model_validate(bad)


def test_env_reaches_the_serving_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UPTAKE_SERVING__PORT", "9123")
    monkeypatch.setenv("UPTAKE_SERVING__ENGINE", "vllm")
    settings = Settings(home=tmp_path)
    assert settings.serving.port == 9123 and settings.serving.engine == "vllm"


def test_an_open_address_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    exposed = Settings(home=tmp_path, serving=ServingSettings(host="0.0.0.0", port=0))
    with pytest.raises(ConfigError, match="no API key") as refused:
        ServingService(exposed, models=["m"])
    assert "serving.allow_unauthenticated" in str(refused.value)
    for host in ("10.1.2.3", "::", "example.org"):
        with pytest.raises(ConfigError):
            refuse_open_exposure(host, None, allow=False)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        refuse_open_exposure(host, None, allow=False)  # loopback: this machine only
    refuse_open_exposure("0.0.0.0", "k3y", allow=False)  # a key: open but guarded
    refuse_open_exposure("0.0.0.0", None, allow=True)  # said so explicitly
    assert ServingSettings(allow_unauthenticated=True).allow_unauthenticated
