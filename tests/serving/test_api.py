"""The OpenAI-compatible API against a tiny champion registered in the real test MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.service import ServingService
from tests.conftest import MlflowServer
from tests.serving.conftest import running, serving_settings
from tests.serving.helpers import Registrar, wait_for

# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = pytest.mark.one_backend

PROMPT = [{"role": "user", "content": "When is the filing deadline?"}]
HEADER = "x-uptake-model-version"


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    return {"served": f"api-{tag}", "empty": f"api-empty-{tag}"}


@pytest.fixture(scope="module")
def server(
    broker: str,
    mlflow_server: MlflowServer,
    tmp_path_factory: pytest.TempPathFactory,
    registrar: Registrar,
    models_dir: dict[str, Path],
    names: dict[str, str],
) -> Iterator[ServingService]:
    version = registrar.register(names["served"], models_dir["a"])
    registrar.crown(names["served"], version)
    settings = serving_settings(broker, mlflow_server, tmp_path_factory.mktemp("home"))
    yield from running(settings, [names["served"], names["empty"]])


@pytest.fixture(scope="module")
def client(server: ServingService, names: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        wait_for(lambda: server.manager.current(names["served"]), what="the champion to load")
        yield c


def chat(client: httpx.Client, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": PROMPT, "max_tokens": 8, "temperature": 0, **extra}
    return client.post("/v1/chat/completions", json=body)


def test_chat_completion(client: httpx.Client, names: dict[str, str]) -> None:
    resp = chat(client, names["served"])
    assert resp.status_code == 200, resp.text
    assert resp.headers[HEADER] == f"{names['served']}/1"
    body = resp.json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    again = chat(client, names["served"]).json()  # greedy: the same answer twice
    assert again["choices"][0]["message"]["content"] == choice["message"]["content"]


def test_streaming_matches_the_completion(client: httpx.Client, names: dict[str, str]) -> None:
    whole = chat(client, names["served"]).json()["choices"][0]["message"]["content"]
    body = {
        "model": names["served"],
        "messages": PROMPT,
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers[HEADER] == f"{names['served']}/1"
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) > 1
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_models_lists_each_track_with_its_champion(
    client: httpx.Client, names: dict[str, str]
) -> None:
    data = client.get("/v1/models").json()["data"]
    assert {(m["id"], m["version"]) for m in data} == {
        (names["served"], "1"),
        (names["empty"], None),
    }


def test_unknown_model_is_404(client: httpx.Client) -> None:
    resp = chat(client, "no-such-model")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"


def test_no_champion_is_503_and_not_ready(client: httpx.Client, names: dict[str, str]) -> None:
    resp = chat(client, names["empty"])
    assert resp.status_code == 503
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "no_champion"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (json.dumps({"messages": PROMPT}).encode(), 400, "invalid_parameter"),
        ({"messages": [], "max_tokens": 4}, 400, "invalid_parameter"),
        ({"messages": PROMPT, "n": 2}, 400, "unsupported_parameter"),
        ({"messages": PROMPT, "tools": [{"type": "function"}]}, 400, "invalid_parameter"),
        (
            {"messages": PROMPT, "response_format": {"type": "json_object"}},
            400,
            "unsupported_parameter",
        ),
        ({"messages": PROMPT, "temperature": "hot"}, 400, "invalid_parameter"),
        ({"messages": PROMPT, "max_tokens": -1}, 400, "invalid_parameter"),
        ({"messages": PROMPT, "max_tokens": 10**9}, 400, "invalid_request"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_parameter"),
        ({"messages": PROMPT, "stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_parameter"),
        ({"messages": [{"role": "user", "content": "x" * (2 << 20)}]}, 413, "request_too_large"),
    ],
)
def test_bad_requests_get_openai_errors(
    client: httpx.Client, names: dict[str, str], body: object, status: int, code: str
) -> None:
    if isinstance(body, dict):
        body = json.dumps({"model": names["served"], **body}).encode()
    resp = client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["type"] == "invalid_request_error" and err["message"]


def test_stop_text_ends_the_answer(client: httpx.Client, names: dict[str, str]) -> None:
    full = chat(client, names["served"], max_tokens=16).json()["choices"][0]["message"]["content"]
    assert len(full) > 3
    stop = full[2:4]
    cut = chat(client, names["served"], max_tokens=16, stop=stop).json()["choices"][0]
    assert cut["message"]["content"] == full[: full.index(stop)]
    assert cut["finish_reason"] == "stop"


def test_seeded_sampling_repeats(client: httpx.Client, names: dict[str, str]) -> None:
    first = chat(client, names["served"], temperature=1.0, seed=7).json()
    second = chat(client, names["served"], temperature=1.0, seed=7).json()
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


def test_metrics_count_requests_and_versions(client: httpx.Client, names: dict[str, str]) -> None:
    chat(client, names["served"])
    text = client.get("/metrics").text
    served = names["served"]
    assert f'uptake_serving_requests_total{{model="{served}",status="200"}}' in text
    assert f'uptake_serving_version{{model="{served}",version="1"}} 1.0' in text
    assert f'uptake_serving_swaps_total{{model="{served}"}} 1.0' in text
    assert "uptake_serving_request_seconds_bucket" in text
    assert f'uptake_serving_tokens_total{{kind="completion",model="{served}"}}' in text


def test_the_official_openai_client_works_unchanged(
    server: ServingService, client: httpx.Client, names: dict[str, str]
) -> None:
    from openai import OpenAI

    api = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    assert names["served"] in [m.id for m in api.models.list().data]
    done = api.chat.completions.create(
        model=names["served"], messages=PROMPT, max_tokens=8, temperature=0
    )
    text = done.choices[0].message.content
    assert text == chat(client, names["served"]).json()["choices"][0]["message"]["content"]
    assert done.usage is not None and done.usage.completion_tokens > 0
    raw = api.chat.completions.with_raw_response.create(
        model=names["served"], messages=PROMPT, max_tokens=8, temperature=0
    )
    assert raw.headers[HEADER] == f"{names['served']}/1"
    pieces = [
        c.choices[0].delta.content or ""
        for c in api.chat.completions.create(
            model=names["served"], messages=PROMPT, max_tokens=8, temperature=0, stream=True
        )
        if c.choices
    ]
    assert "".join(pieces) == text and len([p for p in pieces if p]) > 1
    from openai import NotFoundError

    with pytest.raises(NotFoundError):
        api.chat.completions.create(model="no-such-model", messages=PROMPT)


SUITE = [
    {
        "id": f"t{i}",
        "practice_area": area,
        "messages": [{"role": "user", "content": question}],
        "max_new_tokens": 10,
        "criteria": [
            {"id": "c1", "description": "has an e", "check": {"type": "contains", "value": "e"}},
            {"id": "c2", "description": "has an o", "check": {"type": "regex", "pattern": "o"}},
        ],
    }
    for i, (area, question) in enumerate(
        [
            ("tax", "Is the notice late?"),
            ("tax", "Which statute governs the deadline?"),
            ("immigration", "Can the employer file the petition?"),
            ("immigration", "What must the memo summarise?"),
        ]
    )
]


def _eval(model: str, suite: Path, out: Path, *extra: str) -> dict[str, object]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "uptake.cli",
            "eval",
            "--model",
            model,
            "--suite",
            str(suite),
            "--json",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--bootstrap",
            "100",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.slow  # two `uptake eval` processes
def test_uptake_eval_scores_the_served_champion_as_its_directory(
    server: ServingService,
    client: httpx.Client,
    names: dict[str, str],
    models_dir: dict[str, Path],
    tmp_path: Path,
) -> None:
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps(t) + "\n" for t in SUITE))
    served = _eval(f"{server.url}/v1", suite, tmp_path / "served", "--api-model", names["served"])
    local = _eval(str(models_dir["a"]), suite, tmp_path / "local")

    def answers(out: Path) -> dict[str, str]:
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        return {r["task_id"]: r["response"] for r in rows if "task_id" in r}

    assert answers(tmp_path / "served") == answers(tmp_path / "local")
    for key in ("all_pass_rate", "criterion_pass_rate", "mean_score", "per_area"):
        assert served[key] == local[key], key
    assert 0 < served["criterion_pass_rate"] < 1  # type: ignore[operator]  # not a trivial suite


def test_a_prompt_over_the_context_is_a_400(client: httpx.Client, names: dict[str, str]) -> None:
    long = [{"role": "user", "content": "deadline " * 1500}]  # the tiny model's context: 1024
    resp = client.post(
        "/v1/chat/completions",
        json={"model": names["served"], "messages": long, "max_tokens": 4},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_prompt"
    assert "context" in resp.json()["error"]["message"]
    assert chat(client, names["served"]).status_code == 200  # the batch thread lives on
