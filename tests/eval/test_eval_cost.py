"""Cost beside quality: tokens in/out per task from a real tiny model and from an
OpenAI-compatible loopback endpoint that reports ``usage``; cost per task from prices."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fastapi import FastAPI, Request

from pipeline.eval import load_results, run_eval, save_results
from pipeline.eval.cost import Price, cost_per_task
from pipeline.eval.generate import TransformersBackend
from pipeline.eval.mlflow_log import eval_metrics
from pipeline.eval.suite import load_suite
from tests.eval.helpers import LoopbackServer, completion, task, write_suite
from uptake.cli import main
from uptake.mlflow_contract import (
    COST_PER_TASK,
    EVAL_BACKEND_TAG,
    EVAL_MODEL_TAG,
    GENERATION_SECONDS,
    GPU_HOUR_PRICE,
    PRICE_IN_PER_MTOK,
    SUITE_SHA_TAG,
    TOKENS_IN,
    TOKENS_OUT,
)

# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = pytest.mark.one_backend

PROMPTS = ["What is the deadline?", "Which statute governs a lease?", "Hi"]


@pytest.fixture
def suite_path(tmp_path: Path) -> Path:
    return write_suite(
        tmp_path / "suite.jsonl", [task(f"t{i}", prompt=p) for i, p in enumerate(PROMPTS)]
    )


def test_tiny_model_records_tokens_per_task(
    tiny_model: Path, suite_path: Path, tmp_path: Path
) -> None:
    backend = TransformersBackend(tiny_model, device="cpu")
    suite = load_suite(suite_path)
    result = run_eval(backend, suite, max_new_tokens=4, batch_size=2)
    prompts = backend.render_all([t.messages for t in result.tasks])  # one bounded render
    for t, prompt in zip(result.tasks, prompts, strict=True):
        assert t.prompt_tokens == len(
            backend.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        )
        assert 1 <= t.n_tokens <= 4
    assert result.tokens_in == sum(t.prompt_tokens for t in result.tasks) > 0
    assert result.tokens_out == result.generation.n_tokens

    metrics = eval_metrics(result)
    assert metrics[TOKENS_IN] == result.tokens_in and metrics[TOKENS_OUT] == result.tokens_out
    assert metrics[GENERATION_SECONDS] == result.generation.seconds > 0
    assert COST_PER_TASK not in metrics  # no price, no cost

    # self-hosted: a GPU-hour price and the measured generation time per task
    gpu = Price(gpu_hour=3.6)
    priced = eval_metrics(result, price=gpu)
    assert priced[COST_PER_TASK] == pytest.approx(3.6 * result.generation.seconds / 3600 / 3)
    assert priced[GPU_HOUR_PRICE] == 3.6
    # the per-task tokens survive the results file (the gate's and report's source)
    back = load_results(save_results(result, tmp_path / "r.jsonl"))
    assert [t.prompt_tokens for t in back.tasks] == [t.prompt_tokens for t in result.tasks]
    assert back.tokens_out == result.tokens_out
    assert cost_per_task(back, gpu) is None  # a file carries no generation time: no guess
    tokens = Price(in_per_mtok=2.0, out_per_mtok=8.0)
    expected = (2.0 * result.tokens_in + 8.0 * result.tokens_out) / 1e6 / 3
    assert cost_per_task(back, tokens) == pytest.approx(expected)


def usage_server(bad_usage: object = None) -> FastAPI:
    """An endpoint that reports usage: a prompt token per word, seven tokens out."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = await request.json()
        words = sum(len(m["content"].split()) for m in body["messages"])
        reply = completion("the answer is x", completion_tokens=7)
        reply["usage"] = (
            bad_usage
            if bad_usage is not None
            else {
                "prompt_tokens": words,
                "completion_tokens": 7,
                "total_tokens": words + 7,
            }
        )
        return reply

    return app


def test_openai_backend_records_usage_and_prices_it(suite_path: Path) -> None:
    suite = load_suite(suite_path)
    with LoopbackServer(usage_server()) as server:
        result = run_eval(server.url, suite, backend="openai", api_model="closed-api")
    assert [t.prompt_tokens for t in result.tasks] == [len(p.split()) for p in PROMPTS]
    assert [t.n_tokens for t in result.tasks] == [7, 7, 7]
    price = Price(in_per_mtok=3.0, out_per_mtok=15.0)
    metrics = eval_metrics(result, price=price)
    words = sum(len(p.split()) for p in PROMPTS)
    assert metrics[COST_PER_TASK] == pytest.approx((3.0 * words + 15.0 * 21) / 1e6 / 3)
    assert metrics[PRICE_IN_PER_MTOK] == 3.0


@pytest.mark.parametrize("usage", ["lots", {"prompt_tokens": -4, "completion_tokens": True}, [1]])
def test_odd_usage_counts_zero(suite_path: Path, usage: object) -> None:
    with LoopbackServer(usage_server(usage)) as server:
        result = run_eval(server.url, load_suite(suite_path), backend="openai", api_model="m")
    assert result.tokens_in == 0 and result.tokens_out == 0
    assert all(t.response == "the answer is x" for t in result.tasks)


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = 0
    try:
        main(["eval", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "prices",
    [
        ("--price-in", "1", "--gpu-hour-price", "2"),
        ("--gpu-hour-price", "2", "--cpu-hour-price", "1"),
    ],
)
def test_cli_refuses_two_kinds_of_price(
    suite_path: Path, capsys: pytest.CaptureFixture[str], prices: tuple[str, ...]
) -> None:
    code, _, err = run_main(
        capsys, "--model", "http://127.0.0.1:9/v1", "--suite", str(suite_path), *prices
    )
    assert code == 2 and err.count("\n") == 1 and "not both" in err


def test_cli_scores_an_external_model_into_mlflow(
    mlflow_server, suite_path: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`uptake eval --mlflow --price-in/--price-out`: an API model lands on the suite's runs,
    with its cost, for the report's quality-cost chart."""
    from mlflow import MlflowClient

    monkeypatch.setenv("UPTAKE_MLFLOW_TRACKING_URI", mlflow_server.tracking_uri)
    monkeypatch.setenv("UPTAKE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("UPTAKE_CONFIG", raising=False)
    name = f"closed-{uuid.uuid4().hex[:6]}"
    with LoopbackServer(usage_server()) as server:
        code, out, err = run_main(
            capsys, "--model", f"{server.url}/v1", "--api-model", name, "--suite",
            str(suite_path), "--price-in", "3", "--price-out", "15", "--mlflow", "--json",
        )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    words = sum(len(p.split()) for p in PROMPTS)
    assert summary["tokens_in"] == words and summary["tokens_out"] == 21
    assert summary["cost_per_task"] == pytest.approx((3 * words + 15 * 21) / 1e6 / 3)
    run = MlflowClient(mlflow_server.tracking_uri).get_run(summary["mlflow_run_id"])
    assert run.data.tags[EVAL_MODEL_TAG] == name and run.data.tags[EVAL_BACKEND_TAG] == "openai"
    assert run.data.tags[SUITE_SHA_TAG] == load_suite(suite_path).sha256
    assert run.data.metrics[COST_PER_TASK] == pytest.approx(summary["cost_per_task"])
    assert run.data.metrics[TOKENS_IN] == words
