"""The connection guard's pieces on their own (``uptake/http_guard.py``): resource errors
logged once per interval, the connection cap fitted to the open-files limit. Serving's use of
it against real slow and abandoning clients is ``tests/serving/test_hostile_clients.py``."""

from __future__ import annotations

import errno
import logging
import resource
import socket
import subprocess
import sys
import textwrap
import time

from uptake.http_guard import RESERVED_FILES, OncePerInterval


def record(msg: str, exc: BaseException | None = None, name: str = "asyncio") -> logging.LogRecord:
    return logging.LogRecord(
        name, logging.ERROR, __file__, 1, msg, (), (type(exc), exc, None) if exc else None
    )


def test_resource_errors_pass_once_per_interval_with_the_count_held_back() -> None:
    quiet = OncePerInterval(interval_s=0.2)
    emfile = OSError(errno.EMFILE, "Too many open files")
    first = record("socket.accept() out of system resource", emfile)
    assert quiet.filter(first)
    assert first.exc_info is None  # one line: no traceback, it is the same every time
    held = [
        quiet.filter(record("socket.accept() out of system resource", emfile)) for _ in range(500)
    ]
    assert not any(held)
    assert quiet.filter(record("an unrelated error"))  # other records pass untouched
    assert quiet.filter(record("Too many open files", name="uvicorn.error"))  # its own logger
    time.sleep(0.25)
    later = record("socket.accept() out of system resource", emfile)
    assert quiet.filter(later)
    assert "(500 more like it in the last 0.2s)" in later.getMessage()


def test_a_flood_of_accept_errors_writes_a_few_lines(tmp_path) -> None:
    """A real asyncio server out of descriptors: the loop's accept error each second, plus
    whatever else runs out, through the installed filter."""
    script = textwrap.dedent(
        """
        import asyncio, logging, resource, socket, sys, time
        from uptake.http_guard import quiet_resource_errors
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        quiet_resource_errors(interval_s=60)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

        async def main():
            async def serve(reader, writer):
                await asyncio.sleep(30)
            server = await asyncio.start_server(serve, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            print(port, flush=True)
            for _ in range(4):  # the loop logs each failed accept (once a second)
                await asyncio.sleep(1)
                try:
                    open("/dev/null")
                except OSError as exc:
                    logging.getLogger("other").error("cannot open: %s", exc)
            server.close()
            print("done", file=sys.stderr)
            sys.stderr.flush()
            import os
            os._exit(0)  # the open connections' handlers are not the test's concern
        asyncio.run(main())
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    clients = []
    for _ in range(120):  # more than the 64 descriptors the server may hold
        try:
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            break
    _, stderr = proc.communicate(timeout=60)
    for c in clients:
        c.close()
    lines = [line for line in stderr.splitlines() if "out of system resource" in line]
    others = [line for line in stderr.splitlines() if "cannot open" in line]
    assert stderr.rstrip().endswith("done"), stderr[-2000:]
    assert len(lines) == 1, stderr[-2000:]
    assert len(others) == 1, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]


def fitted(soft: int, hard: int, wanted: int) -> int:
    """``fit_to_open_files(wanted)`` in a child whose limits are (soft, hard)."""
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource; from uptake.http_guard import fit_to_open_files; "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
            f"print(fit_to_open_files({wanted}), resource.getrlimit(resource.RLIMIT_NOFILE)[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cap, soft_after = child.stdout.split()
    return int(cap) if int(soft_after) >= int(cap) + RESERVED_FILES else -1


def test_the_connection_cap_fits_under_the_open_files_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    assert fitted(200, 200, 512) == 200 - RESERVED_FILES  # the hard limit binds: fewer
    assert fitted(200, top, 100) == 100  # fits already
    assert fitted(200, top, top - RESERVED_FILES) == top - RESERVED_FILES  # soft raised
