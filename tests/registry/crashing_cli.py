"""``python -m tests.registry.crashing_cli GROUP ARGS...``: the real ``uptake ARGS...`` whose
bus consumer in group GROUP crashes after a second of real consuming (a controlled fault).

The crash is a ``BaseException`` that is not an ``Exception``: nothing on its way may swallow
it, like a real fatal error in a consumer loop. Other consumers run unchanged.
"""

from __future__ import annotations

import sys
from typing import Any

from uptake.bus import consumer
from uptake.cli import main


class InjectedCrash(BaseException):
    """The fault: ends the consumer thread it is raised in."""


def crash_group(group: str) -> None:
    real_run = consumer.EventConsumer.run

    def run(self: consumer.EventConsumer, **kwargs: Any) -> Any:
        if self.group_id != group:
            return real_run(self, **kwargs)
        real_run(self, timeout_s=1.0)  # joins the group and polls the real broker first
        raise InjectedCrash(f"injected fault in group {group}\n(second line of the message)")

    consumer.EventConsumer.run = run  # type: ignore[method-assign]


if __name__ == "__main__":
    crash_group(sys.argv[1])
    main(sys.argv[2:])
