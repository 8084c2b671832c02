"""Serving decides remote code by the version's source and repo id (issue 19, item 4).

Serving's loader used to match the allow-list against the cached folder's path only, so an
allow-listed remote-code champion (trusted by ``acme/*``) could never load. Now the version's
MLflow tags (the release id ``{source}:{repo}@{rev}``) name its origin: the champion from the
hub source loads and its own code runs; the same files released through a drop folder named
``acme/...`` are refused, and the refusal is counted as a failed swap.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.service import ServingService
from tests.conftest import MlflowServer
from tests.serving.conftest import running, serving_settings
from tests.serving.helpers import Registrar, tiny_model, wait_for
from tests.train.helpers import make_remote_code_model
from uptake.mlflow_contract import BASE_MODEL_TAG, RELEASE_ID_TAG
from uptake.watcher_config import DirSourceConfig, HfSourceConfig

# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = pytest.mark.one_backend

PROMPT = [{"role": "user", "content": "Which statute governs the deadline?"}]


@pytest.fixture(scope="module")
def champions(registrar: Registrar, tmp_path_factory) -> dict[str, str]:
    """One remote-code model registered twice: from the hub source and from a drop folder."""
    root = tmp_path_factory.mktemp("remote")
    model = make_remote_code_model(tiny_model(root / "tinyfoo", seed=3))
    names = {}
    for source in ("hub", "drops"):
        name = f"rc-{source}-{uuid.uuid4().hex[:6]}"
        copy = Path(shutil.copytree(model, root / name))
        tags = {RELEASE_ID_TAG: f"{source}:acme/tinyfoo@r1", BASE_MODEL_TAG: "acme/tinyfoo"}
        registrar.crown(name, registrar.register(name, copy, tags))
        names[source] = name
    return names


@pytest.fixture(scope="module")
def server(
    broker: str, mlflow_server: MlflowServer, tmp_path_factory, champions: dict[str, str]
) -> Iterator[ServingService]:
    home = tmp_path_factory.mktemp("home")
    settings = serving_settings(broker, mlflow_server, home, reconcile_interval_s=3600)
    settings = settings.model_copy(
        update={
            "trust_remote_code_allowlist": ["acme/*"],  # bare: hub sources only
            "sources": [
                HfSourceConfig(name="hub", kind="hf", authors=["acme"]),
                DirSourceConfig(name="drops", kind="dir", path=home / "drops"),
            ],
        }
    )
    yield from running(settings, list(champions.values()))


def test_an_allowlisted_remote_code_champion_loads_and_answers(
    server: ServingService, champions: dict[str, str]
) -> None:
    name = champions["hub"]
    served = wait_for(lambda: server.manager.current(name), what="the hub champion")
    assert type(served.loaded.model).__name__ == "TinyFooForCausalLM"  # its own code ran
    body = {"model": name, "messages": PROMPT, "max_tokens": 4, "temperature": 0}
    resp = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert resp.status_code == 200, resp.text


def test_the_same_code_from_a_drop_folder_is_refused(
    server: ServingService, champions: dict[str, str]
) -> None:
    name = champions["drops"]
    wait_for(
        lambda: (
            f'uptake_serving_swap_failures_total{{model="{name}"}} 1.0'
            in httpx.get(f"{server.url}/metrics").text
        ),
        what="the refusal counted",
    )
    assert server.manager.current(name) is None
