"""The ``stack:`` settings section: how ``uptake up`` restarts a component that exits.

Beside the other sections in the core (not in ``uptake/stack/``), so ``uptake.settings`` reads
it without importing the stack's supervisor: no import cycle between the two.
"""

from __future__ import annotations

from pydantic import Field

from uptake.config_model import ConfigModel


class StackSettings(ConfigModel):
    """``stack:`` in the config (env ``UPTAKE_STACK__*``): restarts in ``uptake up``."""

    restart_backoff_initial_s: float = Field(
        1.0, gt=0, le=3600, description="Seconds before the first restart; doubled per recent exit."
    )
    restart_backoff_max_s: float = Field(
        60.0, gt=0, le=3600, description="Cap of that backoff, seconds."
    )
    crash_loop_exits: int = Field(
        5, ge=1, le=1000, description="Exits within `crash_loop_window_s` that give it up."
    )
    crash_loop_window_s: float = Field(
        600.0, gt=0, le=86_400, description="Window of the crash-loop count, seconds."
    )
    stable_after_s: float = Field(
        60.0, gt=0, le=86_400, description="Seconds up after a restart before its alert resolves."
    )
