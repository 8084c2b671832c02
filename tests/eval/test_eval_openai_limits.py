"""The OpenAI-compatible backend against hostile endpoints on loopback: each call ends within
its deadline however slowly the answer drips, and an oversize answer fails without a retry."""

from __future__ import annotations

import time

import pytest

from pipeline.eval.generate import GenRequest, OpenAIBackend
from tests.core.http_servers import HostileServer, elapsed
from uptake.errors import DependencyError

REQUEST = GenRequest(messages=[{"role": "user", "content": "hi"}], max_new_tokens=4)


def test_an_endpoint_that_drips_its_answer_fails_at_the_deadline() -> None:
    # One byte per 0.1 s: every read is quick, so only a total deadline ends the call.
    with HostileServer("drip_body", interval_s=0.1, drip_bytes=200) as server:
        backend = OpenAIBackend(
            server.url, model="served", timeout_s=1.0, max_retries=1, backoff_s=0
        )
        start = time.monotonic()
        with pytest.raises(DependencyError, match="deadline"):
            backend.generate([REQUEST], batch_size=1)
        took = elapsed(start)
        backend.close()
    assert server.requests == 2  # a timeout is retried
    assert 1.8 < took < 4.0, took  # two calls of 1 s each, not 200 x 0.1 s each


def test_an_oversize_answer_fails_without_a_retry() -> None:
    with HostileServer("flood", flood_bytes=20 << 20) as server:
        backend = OpenAIBackend(server.url, model="served", max_retries=2, backoff_s=0)
        with pytest.raises(DependencyError, match=r"larger than|too large|bytes"):
            backend.generate([REQUEST], batch_size=1)
        backend.close()
    # No bound on server.sent: loopback receive buffers autotune up to tcp_rmem's max (32 MiB
    # here), so the kernel may take the whole body although the client stops reading at 8 MiB.
    assert server.requests == 1


def test_an_oversize_model_list_is_a_dependency_error() -> None:
    with (
        HostileServer("declared_huge", flood_bytes=20 << 20) as server,
        pytest.raises(DependencyError),
    ):
        OpenAIBackend(server.url)
