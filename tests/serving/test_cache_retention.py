"""Serving prunes its version cache after each swap (issue 19, item 6): the champion it now
serves stays, older versions past ``serving.keep_versions`` go, a dot-named folder (a
download in progress) is left alone, and the kept version's manifest stays."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from serving.champions import MANIFEST
from tests.conftest import MlflowServer
from tests.serving.conftest import running, serving_settings
from tests.serving.helpers import Registrar, wait_for

pytestmark = pytest.mark.one_backend


def test_a_swap_prunes_the_versions_past_the_champion_and_the_newest(
    broker: str,
    mlflow_server: MlflowServer,
    registrar: Registrar,
    models_dir: dict[str, Path],
    tmp_path: Path,
) -> None:
    name = f"prune-{uuid.uuid4().hex[:6]}"
    v1 = registrar.register(name, models_dir["a"])
    v2 = registrar.register(name, models_dir["b"])
    registrar.crown(name, v1)
    settings = serving_settings(
        broker, mlflow_server, tmp_path / "home", reconcile_interval_s=0.5, keep_versions=0
    )
    cache = settings.state_dir / "serving" / name
    in_progress = cache / f".{v2}-downloading"
    in_progress.mkdir(parents=True)
    for service in running(settings, [name]):
        wait_for(lambda s=service: s.manager.current(name), what="v1 served")
        assert (cache / v1 / MANIFEST).is_file()
        registrar.crown(name, v2)  # the reconcile picks it up
        wait_for(
            lambda s=service: (c := s.manager.current(name)) is not None and c.version == v2,
            what="v2 served",
        )
        wait_for(lambda: not (cache / v1).exists(), what="v1 pruned")
        assert (cache / v2 / MANIFEST).is_file()
        assert in_progress.is_dir()
