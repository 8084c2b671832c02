"""The shared outbound-HTTP limits against real hostile servers on loopback."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.core.http_servers import HostileServer, elapsed
from uptake.http_limits import (
    DeadlineError,
    DeadlineExceeded,
    ResponseTooLarge,
    SizeError,
    hub_transport,
    limited_client,
    limits,
)


@pytest.mark.parametrize("mode", ["drip_body", "drip_headers"])
def test_a_slow_drip_ends_at_the_deadline_although_every_read_is_quick(mode: str) -> None:
    # one byte every 0.2 s: a 5 s read timeout never fires
    with (
        HostileServer(mode) as server,
        limited_client(deadline_s=1.0, max_bytes=None, timeout=5.0) as client,
    ):
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            client.get(server.url)
        took = elapsed(start)
    assert 0.9 <= took < 2.0, took
    assert isinstance(info.value, httpx.TimeoutException)  # callers' httpx handling still works
    assert "1 s deadline" in str(info.value) and "/hook" not in str(info.value)  # no path
    assert info.value.request.method == "GET"


def test_plain_httpx_would_wait_on_the_drip() -> None:
    """The defect the helper exists for: httpx's own timeout is per read, not per call."""
    with (
        HostileServer("drip_body", interval_s=0.05) as server,
        httpx.Client(timeout=1.0) as client,
        client.stream("GET", server.url) as resp,
    ):
        start = time.monotonic()
        for _ in resp.iter_raw():
            if elapsed(start) > 1.5:
                break
    assert elapsed(start) > 1.5  # still reading after 1.5 s, past a 1 s "timeout"


def test_a_scope_bounds_several_requests_together() -> None:
    with (
        HostileServer("ok") as fast,
        HostileServer("drip_body") as slow,
        limited_client(deadline_s=None, max_bytes=None, timeout=5.0) as client,
    ):
        start = time.monotonic()
        with limits(deadline_s=1.0), pytest.raises(DeadlineExceeded):
            assert client.get(fast.url).json() == {"ok": True}
            client.get(slow.url)
        assert elapsed(start) < 2.0
        assert client.get(fast.url).status_code == 200  # outside the scope: no deadline


@pytest.mark.parametrize("mode", ["flood", "declared_huge"])
def test_an_oversize_response_is_refused_without_reading_it_all(mode: str) -> None:
    with (
        HostileServer(mode, flood_bytes=50 << 20) as server,
        limited_client(deadline_s=10.0, max_bytes=1 << 20) as client,
        pytest.raises(ResponseTooLarge) as info,
    ):
        client.get(server.url)
    assert isinstance(info.value, httpx.HTTPError)
    assert "limit 1048576 bytes" in str(info.value)
    assert server.sent < 40 << 20  # stopped well before the 50 MiB were sent


def test_within_limits_a_response_reads_normally() -> None:
    with (
        HostileServer("ok", body=b'{"ok": true}') as server,
        limited_client(deadline_s=5.0, max_bytes=12) as client,
    ):
        assert client.post(server.url, json={"x": 1}).json() == {"ok": True}
    with (
        HostileServer("ok", body=b'{"ok": true} ') as server,  # 13 bytes: one too many
        limited_client(deadline_s=5.0, max_bytes=12) as client,
        pytest.raises(SizeError),
    ):
        client.get(server.url)


def test_the_same_limits_for_httpx2_the_hub_clients_flavour() -> None:
    import httpx2

    with HostileServer("drip_body") as server:
        transport = hub_transport(deadline_s=1.0)
        with httpx2.Client(transport=transport, timeout=5.0) as client:
            start = time.monotonic()
            with pytest.raises(DeadlineError) as info:
                client.get(server.url)
    assert elapsed(start) < 2.0
    assert isinstance(info.value, httpx2.TimeoutException)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError), limits(deadline_s=0):
        pass
    with pytest.raises(ValueError):
        limited_client(deadline_s=-1, max_bytes=None)
