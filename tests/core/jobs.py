"""Targets for long jobs and consumer subprocesses (must be importable: children are spawned)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def slow_job(marker: str, seconds: float) -> None:
    """Append our pid to ``marker``, then work for ``seconds``."""
    with Path(marker).open("a") as fh:
        fh.write(f"start {os.getpid()}\n")
    time.sleep(seconds)
    with Path(marker).open("a") as fh:
        fh.write("done\n")


def failing_job(message: str) -> None:
    raise RuntimeError(message)


def crashing_job() -> None:
    os._exit(7)


def refusing_job(reason: str) -> None:
    """A refusal: no retry can change it (the worker refusing a model, say)."""
    from uptake.errors import PermanentError

    raise PermanentError(reason)


def deaf_job(marker: str, seconds: float) -> None:
    """Ignore SIGTERM (a trainer stuck in a C call, say): only SIGKILL ends it."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    slow_job(marker, seconds)


def consume_forever(group: str, marker: str, block: str) -> None:
    """Run a consumer whose handler records each event id and then blocks (or not).

    ``block``: "forever" – the handler never returns (the test kills us before commit);
    "job" – the handler hands a 10-minute LongJob to a child (its pid goes to marker.job);
    "no" – handle and commit normally until SIGTERM.
    """
    from uptake.bus import EventConsumer, LongJob
    from uptake.settings import load_settings

    settings = load_settings()

    def handler(event, record):
        with Path(marker).open("a") as fh:
            fh.write(f"{event.event_id} {record.offset}\n")
            fh.flush()
        if block == "forever":
            while True:
                time.sleep(1)
        if block == "job":
            return LongJob(slow_job, (marker + ".job", 600.0), name="train")
        return None

    consumer = EventConsumer(settings, group, [settings.kafka.topics.runs], handler)
    consumer.install_signal_handlers()
    with Path(marker + ".ready").open("w") as fh:
        fh.write("ready\n")
    try:
        consumer.run()
    finally:
        consumer.close()
    print("consumer stopped cleanly", file=sys.stderr)


if __name__ == "__main__":
    consume_forever(sys.argv[1], sys.argv[2], sys.argv[3])


def report_start(path: str, var: str) -> None:
    """Write what the child started with: its parent, an env var, whether torch was loaded."""
    import json

    facts = {"ppid": os.getppid(), "var": os.environ.get(var), "torch": "torch" in sys.modules}
    Path(path).write_text(json.dumps(facts))
