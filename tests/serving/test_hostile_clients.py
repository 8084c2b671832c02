"""Clients that leave, dawdle, flood or send absurd values cannot stall the server or make it
fail: each test is one way a careless or hostile client found to wedge it (issue 20), against
a real server on loopback with a tiny champion from the test MLflow."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
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
LONG = 1000  # new tokens: about 7 s for a batch of them on this machine's tiny model
BATCH, QUEUE, CAP = 4, 8, 40
HEADER_S, BODY_S = 1.5, 1.5


@pytest.fixture(scope="module")
def model() -> str:
    return f"hostile-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def server(
    broker: str,
    mlflow_server: MlflowServer,
    tmp_path_factory: pytest.TempPathFactory,
    registrar: Registrar,
    models_dir: dict[str, Path],
    model: str,
) -> Iterator[ServingService]:
    registrar.crown(model, registrar.register(model, models_dir["a"]))
    settings = serving_settings(
        broker,
        mlflow_server,
        tmp_path_factory.mktemp("home"),
        max_batch=BATCH,
        max_queue=QUEUE,
        max_connections=CAP,
        header_timeout_s=HEADER_S,
        body_timeout_s=BODY_S,
        keep_alive_s=1.0,
        torch_threads=1,
    )
    for service in running(settings, [model]):
        wait_for(lambda s=service: s.manager.current(model), what="the champion to load")
        yield service


def raw_request(body: dict, *, host: str = "127.0.0.1") -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def connect(service: ServingService) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=10)


def status_line(sock: socket.socket, timeout_s: float) -> str | None:
    """The first line the server sent within ``timeout_s``; "" when it closed; None if it
    said nothing."""
    sock.settimeout(timeout_s)
    try:
        data = sock.recv(200)
    except TimeoutError:
        return None
    except ConnectionResetError:
        return ""
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def metric(service: ServingService, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.split()[-1])
    return None


def chat(service: ServingService, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": PROMPT, "max_tokens": 2, "temperature": 0, **extra}
    return httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=60)


def settled(service: ServingService, model: str) -> None:
    """Nothing queued or running, no client connection left over from a test."""
    wait_for(
        lambda: (
            metric(service, "uptake_serving_queue_depth", model=model) == 0
            and metric(service, "uptake_serving_in_flight", model=model) == 0
        ),
        timeout_s=60,
        what="the server to settle",
    )


# -- defect 1: abandoned requests, a bounded queue -------------------------------------------


def test_abandoned_non_streaming_requests_are_dropped(server: ServingService, model: str) -> None:
    abandoned = 2 * BATCH  # two batches' worth: ~14 s of generation if nobody noticed
    before = metric(server, "uptake_serving_requests_total", model=model, status="499") or 0
    for _ in range(abandoned):
        sock = connect(server)
        body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
        sock.sendall(raw_request({**body, "max_tokens": LONG, "temperature": 0}))
        time.sleep(0.05)
        sock.close()  # the client gives up: its answer will never be read
    time.sleep(0.3)
    started = time.monotonic()
    resp = chat(server, model)
    took = time.monotonic() - started
    assert resp.status_code == 200, resp.text
    assert took < 3.0, f"a 2-token request waited {took:.1f}s behind abandoned requests"
    wait_for(
        lambda: (
            metric(server, "uptake_serving_requests_total", model=model, status="499")
            == before + abandoned
        ),
        timeout_s=30,
        what="every abandoned request counted as 499",
    )
    settled(server, model)


def test_a_full_queue_answers_429_with_retry_after(server: ServingService, model: str) -> None:
    socks = []
    try:
        for _ in range(BATCH + QUEUE + 6):
            sock = connect(server)
            body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
            sock.sendall(raw_request({**body, "max_tokens": LONG, "temperature": 0}))
            socks.append(sock)
            time.sleep(0.02)
        wait_for(
            lambda: metric(server, "uptake_serving_queue_depth", model=model) == QUEUE,
            timeout_s=20,
            what="a full queue in /metrics",
        )
        resp = chat(server, model)  # one more, now, through the client
        assert resp.status_code == 429
        assert resp.headers["retry-after"] == "1"
        error = resp.json()["error"]
        assert error["code"] == "queue_full" and error["type"] == "rate_limit_error"
        assert "serving.max_queue" in error["message"]
        answers = [status_line(s, 0.1) for s in socks]
        refused = [a for a in answers if a is not None]
        assert all(a.startswith("HTTP/1.1 429") for a in refused), answers
        # what is neither waiting (QUEUE) nor generating (1 to BATCH rows) is refused at once
        assert len(socks) - QUEUE - BATCH <= len(refused) <= len(socks) - QUEUE - 1, answers
    finally:
        for sock in socks:
            sock.close()
    settled(server, model)  # the abandoned ones free the queue; the server answers again
    assert chat(server, model).status_code == 200


# -- defect 2: slow clients, too many connections --------------------------------------------


def test_a_declared_body_over_the_cap_is_a_413_before_any_byte_of_it(
    server: ServingService, model: str
) -> None:
    """``413 over max_request_bytes, refused before reading`` (docs/guarantees.md): the headers
    alone declare 1 GB and not one byte of the body is sent; the answer comes at once."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        )
        line = status_line(sock, 5)
    assert line is not None and line.startswith("HTTP/1.1 413"), line
    assert chat(server, model).status_code == 200  # the server went on serving


def test_slow_bodies_are_cut_at_the_body_deadline(server: ServingService, model: str) -> None:
    body = raw_request({"model": model, "messages": PROMPT, "max_tokens": 2})
    head, rest = body.split(b"\r\n\r\n", 1)
    socks = [connect(server) for _ in range(20)]
    stop = threading.Event()

    def drip() -> None:  # one byte of each body every 0.3 s: never done in time
        for sock in socks:
            sock.sendall(head + b"\r\n\r\n")
        for i in range(len(rest)):
            if stop.wait(0.3):
                return
            for sock in socks:
                with contextlib.suppress(OSError):  # cut off already
                    sock.sendall(rest[i : i + 1])

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        started = time.monotonic()
        assert chat(server, model).status_code == 200  # others are served meanwhile
        answers = [status_line(s, BODY_S + 3) for s in socks]
        took = time.monotonic() - started
        assert all(a is not None and a.startswith("HTTP/1.1 408") for a in answers), answers
        assert took < BODY_S + 4
    finally:
        stop.set()
        dripper.join(5)
        for sock in socks:
            sock.close()


def test_a_client_that_leaves_mid_body_is_no_server_error(
    server: ServingService, model: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = raw_request({"model": model, "messages": PROMPT, "max_tokens": 2})
    before = metric(server, "uptake_serving_requests_total", model="", status="499") or 0
    sock = connect(server)
    sock.sendall(body[: len(body) - 10])  # all but the last bytes, then gone
    time.sleep(0.2)
    sock.close()
    wait_for(
        lambda: (
            metric(server, "uptake_serving_requests_total", model="", status="499") == before + 1
        ),
        timeout_s=10,
        what="the request counted as 499",
    )
    assert metric(server, "uptake_serving_requests_total", model="", status="500") is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_slow_headers_and_idle_connections_are_closed(server: ServingService) -> None:
    idle = [connect(server) for _ in range(5)]
    slow = [connect(server) for _ in range(5)]
    for sock in slow:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started = time.monotonic()
    for sock in [*idle, *slow]:
        assert status_line(sock, HEADER_S + 3) == ""  # closed by the server
        sock.close()
    assert time.monotonic() - started < HEADER_S + 3


def test_connections_over_the_cap_are_refused_at_once(server: ServingService, model: str) -> None:
    socks = [connect(server) for _ in range(CAP + 10)]
    try:
        time.sleep(0.3)
        refused = [s for s in socks if (line := status_line(s, 0.2)) and "503" in line]
        assert len(refused) >= 10, f"{len(refused)} refused of {len(socks)}"
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.3)
    assert chat(server, model).status_code == 200  # the idle ones are gone: serving again


# -- defects 3 and 5: absurd values are a 400 naming the field ----------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 1e-300}, "temperature"),
        ({"temperature": 5e-4}, "temperature"),
        ({"seed": 2**70}, "seed"),
        ({"seed": -(2**70)}, "seed"),
        ({"max_tokens": 1e300}, "max_tokens"),
        ({"stop": ["x" * 200_000] * 4}, "stop"),
        ({"stop": "y" * 257}, "stop"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_bad_numbers_and_stops_are_a_400_naming_the_field(
    server: ServingService, model: str, extra: dict, param: str
) -> None:
    resp = chat(server, model, **extra)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and error["message"].startswith(param), error
    assert error["code"] == "invalid_parameter"


def test_non_numbers_in_json_are_refused(server: ServingService, model: str) -> None:
    body = json.dumps({"model": model, "messages": PROMPT})[:-1] + ', "temperature": NaN}'
    resp = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json", resp.text


def test_extreme_but_valid_values_are_served(server: ServingService, model: str) -> None:
    for extra in (
        {"seed": 2**63 - 1, "temperature": 1.0},
        {"seed": -(2**63), "temperature": 2.0, "top_p": 1e-300},
        {"temperature": 1e-3},
        {"stop": ["z" * 256] * 4},
    ):
        resp = chat(server, model, **extra)
        assert resp.status_code == 200, (extra, resp.text)


def test_a_streamed_prompt_over_the_context_is_a_400_before_the_stream(
    server: ServingService, model: str
) -> None:
    long = [{"role": "user", "content": "deadline " * 1500}]  # the tiny model's context: 1024
    body = {"model": model, "messages": long, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30) as resp:
        resp.read()
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["code"] == "invalid_prompt" and "context" in error["message"]
    assert resp.headers["x-uptake-model-version"] == f"{model}/1"


def test_a_seeded_request_leaves_the_process_generator_alone(
    server: ServingService, model: str
) -> None:
    import torch

    before = torch.random.get_rng_state()
    first = chat(server, model, temperature=1.0, seed=11, max_tokens=8).json()
    after = torch.random.get_rng_state()
    assert torch.equal(before, after)  # the server shares this process: its generator untouched
    torch.manual_seed(12345)  # another thread reseeding (or drawing from) the global generator
    torch.rand(1000)
    second = chat(server, model, temperature=1.0, seed=11, max_tokens=8).json()
    text = [r["choices"][0]["message"]["content"] for r in (first, second)]
    assert text[0] == text[1] and text[0]
