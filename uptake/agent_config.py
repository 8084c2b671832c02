"""The ``agent:`` settings section: how agentic suites (LAB-format tasks) are run and graded.

In the core because the worker's job spec and the eval CLI both read it. The first judge is
``judge:`` as for every suite; ``second_judge`` makes the grading dual (a criterion passes
only when both judges say pass), with each judge's own rates reported beside.
"""

from __future__ import annotations

from pydantic import Field

from uptake.config_model import ConfigModel
from uptake.judge_config import JudgeSettings


class AgentSettings(ConfigModel):
    """Caps, concurrency, sandbox and the optional second judge of agentic evaluation."""

    max_turns: int = Field(
        60, ge=1, le=1000, description="Model turns per task before the loop is ended (LAB: 200)."
    )
    task_deadline_s: float = Field(
        1800.0, gt=0, description="Wall seconds per task; then its partial output is graded."
    )
    token_budget: int = Field(
        2_000_000, ge=1, description="Tokens (in + out) one task may spend over all its turns."
    )
    max_tokens_per_turn: int = Field(
        4096, ge=1, description="Cap on the tokens the model generates in one turn."
    )
    concurrency: int = Field(4, ge=1, le=256, description="Tasks run at once.")
    bash: bool = Field(
        True,
        description="Offer `bash` inside bubblewrap without network (not offered where `bwrap` "
        "cannot run; the run records why).",
    )
    second_judge: JudgeSettings = Field(
        JudgeSettings(),
        description="Optional second judge (its key: UPTAKE_AGENT__SECOND_JUDGE__API_KEY).",
    )
