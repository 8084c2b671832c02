"""Generation on tiny models built in the test: batching, limits, templates, refusals."""

from __future__ import annotations

import json
import shutil
import threading
from contextlib import closing
from pathlib import Path

import pytest
from fastapi import FastAPI, Request

from pipeline.eval import run_eval
from pipeline.eval.generate import (
    GenRequest,
    OpenAIBackend,
    TransformersBackend,
    make_backend,
)
from tests.eval.helpers import LoopbackServer, ScriptedJudge, completion, task, write_suite
from tests.train.helpers import make_remote_code_model
from uptake.errors import DependencyError, InputError
from uptake.models import chatml
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model


def requests_for(suite, n: int, max_new_tokens: int = 16) -> list[GenRequest]:
    return [
        GenRequest(messages=[m.model_dump() for m in t.messages], max_new_tokens=max_new_tokens)
        for t in suite.tasks[:n]
    ]


def test_batched_equals_unbatched(lively_backend: TransformersBackend, legal_suite) -> None:
    # 40 prompts of varying length, two max_new_tokens groups: padding and regrouping both matter.
    reqs = requests_for(legal_suite, 40, 16)
    for r in reqs[::3]:
        r.max_new_tokens = 9
    batched = lively_backend.generate(reqs, batch_size=16)
    single = lively_backend.generate(reqs, batch_size=1)
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.n_tokens for g in batched] == [g.n_tokens for g in single]
    assert len({g.text for g in batched}) > 30  # outputs really depend on the prompt
    assert all(g.n_tokens == r.max_new_tokens for g, r in zip(batched, reqs, strict=True))


def test_generation_is_deterministic(lively_backend: TransformersBackend, legal_suite) -> None:
    reqs = requests_for(legal_suite, 8, 12)
    assert lively_backend.generate(reqs, 4) == lively_backend.generate(reqs, 8)


def test_stops_at_eos(lively_backend: TransformersBackend, legal_suite) -> None:
    reqs = requests_for(legal_suite, 4, 10)
    free = lively_backend.generate(reqs, 4)
    assert all(g.finish_reason == "length" for g in free)
    # Make the token the model emits third for the first prompt an end-of-sequence token.
    ids = lively_backend.tokenizer(free[0].text, add_special_tokens=False)["input_ids"]
    saved = lively_backend.prep.eos_ids
    try:
        lively_backend.prep.eos_ids = [*saved, ids[2]]
        first = lively_backend.generate(reqs[:1], 1)[0]
    finally:
        lively_backend.prep.eos_ids = saved
    assert first.finish_reason == "stop"
    assert first.n_tokens < 10
    assert free[0].text.startswith(first.text)


def test_chat_template_is_used(lively_backend: TransformersBackend) -> None:
    (text,) = lively_backend.render_all([[{"role": "user", "content": "Hello"}]])
    assert text == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    assert not lively_backend.prep.uses_fallback_template


def test_fallback_template_without_chat_template(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "nochat", TinyModelSpec(chat_template="none"))
    backend = TransformersBackend(path, device="cpu")
    assert backend.prep.uses_fallback_template
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert backend.render_all([messages]) == [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    ]
    assert "<|im_start|>" in chatml()
    out = backend.generate([GenRequest(messages=messages, max_new_tokens=5)], 1)
    assert out[0].n_tokens == 5


def test_pad_equals_eos_model(tmp_path: Path, legal_suite) -> None:
    path = build_tiny_model(tmp_path / "padeos", TinyModelSpec(pad_equals_eos=True, arch="qwen2"))
    backend = TransformersBackend(path, device="cpu")
    reqs = requests_for(legal_suite, 6, 6)
    assert backend.generate(reqs, 6) == backend.generate(reqs, 1)


def test_refuses_pickle_only_weights(tmp_path: Path, tiny_model: Path) -> None:
    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    (model_dir / "config.json").write_text((tiny_model / "config.json").read_text())
    (model_dir / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(InputError, match=r"only pickle weights \(pytorch_model.bin\).*safetensors"):
        TransformersBackend(model_dir)


def test_refuses_missing_or_empty_model_dirs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="model directory not found"):
        TransformersBackend(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no config\.json"):
        TransformersBackend(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"no \.safetensors weights"):
        TransformersBackend(tmp_path / "empty")


def test_never_runs_remote_code(tmp_path: Path, tiny_model: Path) -> None:
    model_dir = tmp_path / "remote"
    model_dir.mkdir()
    marker = tmp_path / "code-ran"
    config = {
        "model_type": "evil_llm",
        "architectures": ["EvilForCausalLM"],
        "auto_map": {
            "AutoConfig": "modeling_evil.EvilConfig",
            "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
        },
    }
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (model_dir / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_dir / name).write_text((tiny_model / name).read_text())
    with pytest.raises(InputError, match="cannot load model"):
        TransformersBackend(model_dir)
    assert not marker.exists()


def test_allowlisted_remote_code_model_is_evaluated(tmp_path: Path, tiny_model: Path) -> None:
    """Eval makes training's remote-code decision: allow-listed code runs, other code never."""
    from pipeline.eval.suite import load_suite

    model_dir = make_remote_code_model(Path(shutil.copytree(tiny_model, tmp_path / "tinyfoo")))
    with pytest.raises(InputError, match="not in trust_remote_code_allowlist"):
        TransformersBackend(model_dir, device="cpu", allowlist=["other/*"], repo_id="acme/foo")
    backend = TransformersBackend(
        model_dir, device="cpu", allowlist=["acme/*"], repo_id="acme/tinyfoo"
    )
    assert type(backend.model).__name__ == "TinyFooForCausalLM" and backend.trust_remote_code
    suite = load_suite(write_suite(tmp_path / "suite.jsonl", [task("t1"), task("t2", prompt="Hi")]))
    result = run_eval(
        model_dir,
        suite,
        device="cpu",
        max_new_tokens=4,
        allowlist=["acme/*"],
        repo_id="acme/tinyfoo",
    )
    assert result.metrics.n_tasks == 2 and all(0 < t.n_tokens <= 4 for t in result.tasks)


def test_prompt_too_long_for_the_model(lively_backend: TransformersBackend) -> None:
    long = [GenRequest(messages=[{"role": "user", "content": "word " * 2000}], max_new_tokens=4)]
    (gen,) = lively_backend.generate(long, 1)
    assert gen.context_exceeded and gen.text == "" and gen.n_tokens == 0
    assert gen.prompt_tokens is not None and gen.prompt_tokens >= 1024


def test_backend_selection(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="use --backend openai"):
        make_backend("http://127.0.0.1:1/v1", "transformers")
    with pytest.raises(InputError, match="needs an http"):
        make_backend(tmp_path, "openai")
    with pytest.raises(InputError, match="unknown backend"):
        make_backend(tmp_path, "vllm")


def test_random_tiny_model_scores_zero_all_pass_on_legal_suite(
    tiny_model: Path, legal_suite
) -> None:
    result = run_eval(tiny_model, legal_suite, batch_size=32, device="cpu")
    assert result.metrics.n_tasks == len(legal_suite.tasks) >= 120
    assert result.metrics.all_pass_rate == 0.0
    # Only the "does not overclaim" criteria pass on gibberish; every task has positive ones.
    assert 0.0 < result.metrics.criterion_pass_rate < 0.5
    assert all(a.all_pass_rate == 0.0 for a in result.metrics.per_area.values())
    assert len(result.metrics.per_area) >= 4


def serve_model(backend: TransformersBackend) -> FastAPI:
    """An OpenAI-compatible endpoint in front of a real local model (as serving would be)."""
    app = FastAPI()
    lock = threading.Lock()

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": "tiny-served", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = await request.json()
        req = GenRequest(messages=body["messages"], max_new_tokens=body["max_tokens"])
        with lock:
            gen = backend.generate([req], 1)[0]
        return completion(gen.text, gen.n_tokens, gen.finish_reason)

    return app


def test_openai_backend_scores_like_local_backend(
    lively_backend: TransformersBackend, legal_suite
) -> None:
    from pipeline.eval.suite import Suite

    small = Suite(
        name="small",
        path="-",
        sha256=legal_suite.sha256,
        tasks=legal_suite.tasks[:12],
        max_new_tokens=12,
    )
    local = run_eval(lively_backend, small, batch_size=12)
    with LoopbackServer(serve_model(lively_backend)) as server:
        remote = run_eval(server.url, small, backend="auto", batch_size=4)
    assert remote.backend == "openai" and remote.model == "tiny-served"
    assert [t.response for t in remote.tasks] == [t.response for t in local.tasks]
    assert remote.metrics.criterion_pass_rate == local.metrics.criterion_pass_rate
    assert remote.generation.n_tokens == local.generation.n_tokens == 12 * 12


def test_openai_backend_unreachable() -> None:
    from uptake.stack.process import free_port

    with pytest.raises(DependencyError, match="cannot reach"):
        OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1")


def _endpoint(url: str, **kw: object) -> OpenAIBackend:
    return OpenAIBackend(url, model="served", backoff_s=0, **kw)  # type: ignore[arg-type]


ASK = GenRequest(messages=[{"role": "user", "content": "Deadline?"}], max_new_tokens=8)


def test_openai_backend_retries_rate_limits_and_server_errors(
    judge_server: tuple[ScriptedJudge, str],
) -> None:
    server, url = judge_server
    server.script = [("status", 429), ("status", 503), "30 days"]
    with closing(_endpoint(url, api_key="sk-test-key")) as backend:
        [gen] = backend.generate([ASK])
    assert gen.text == "30 days"
    assert len(server.requests) == 3
    assert {h["authorization"] for h in server.headers} == {"Bearer sk-test-key"}
    body = server.requests[0]
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("served", 8, 0)


def test_openai_backend_fails_at_once_on_a_client_error(
    judge_server: tuple[ScriptedJudge, str],
) -> None:
    server, url = judge_server
    server.script = [("status", 400), "never reached"]
    with (
        closing(_endpoint(url)) as backend,
        pytest.raises(DependencyError, match="HTTP 400"),
    ):
        backend.generate([ASK])
    assert len(server.requests) == 1
    assert "authorization" not in server.headers[0]  # no key configured, none sent


def test_openai_backend_gives_up_after_its_retries(judge_server: tuple[ScriptedJudge, str]) -> None:
    server, url = judge_server
    server.default = ("status", 502)
    with (
        closing(_endpoint(url, max_retries=2)) as backend,
        pytest.raises(DependencyError, match="failed: HTTP 502"),
    ):
        backend.generate([ASK])
    assert len(server.requests) == 3


def test_openai_backend_refuses_a_reply_that_is_not_a_chat_completion(
    judge_server: tuple[ScriptedJudge, str],
) -> None:
    server, url = judge_server
    server.script = [("raw", {"result": "30 days"})]
    with (
        closing(_endpoint(url)) as backend,
        pytest.raises(DependencyError, match="did not return a chat completion"),
    ):
        backend.generate([ASK])


def test_openai_backend_times_out_then_recovers(judge_server: tuple[ScriptedJudge, str]) -> None:
    server, url = judge_server
    server.script = [("sleep", 2.0, "late"), "on time"]
    with closing(_endpoint(url, timeout_s=0.3)) as backend:
        assert backend.generate([ASK])[0].text == "on time"
    server.requests.clear()
    server.script = []
    server.default = ("sleep", 2.0, "late")
    with (
        closing(_endpoint(url, timeout_s=0.3, max_retries=1)) as backend,
        pytest.raises(DependencyError, match="cannot reach"),
    ):
        backend.generate([ASK])
    assert len(server.requests) == 2


def test_openai_backend_asks_the_endpoint_for_its_model_name(
    judge_server: tuple[ScriptedJudge, str],
) -> None:
    _, url = judge_server  # the scripted server has no /v1/models
    with pytest.raises(InputError, match="pass the model name"):
        OpenAIBackend(url)


def test_threads_apply_to_the_call_only(lively_model: Path, legal_suite) -> None:
    import torch

    torch.set_num_threads(2)
    seen: list[int] = []
    backend = TransformersBackend(lively_model, device="cpu", threads=1)
    backend.generate(
        requests_for(legal_suite, 2, 2), 2, progress=lambda n: seen.append(torch.get_num_threads())
    )
    assert seen == [1]
    assert torch.get_num_threads() == 2
