"""The ``judge:`` settings: an LLM judge behind any OpenAI-compatible endpoint.

Its own module so ``uptake.agent_config`` (the second judge) and ``uptake.settings`` share it.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from uptake.config_model import ConfigModel


class JudgeSettings(ConfigModel):
    """An LLM judge behind any OpenAI-compatible endpoint."""

    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint of the judge; null: no judge."
    )
    model: str | None = Field(None, description="The judge's model name at that endpoint.")
    api_key: SecretStr | None = Field(None, description="Bearer key of the judge's endpoint.")
    timeout_s: float = Field(60.0, gt=0, description="Seconds per judge request, as a whole.")
    max_retries: int = Field(
        3,
        ge=0,
        description="Tries after the first per verdict (transport error, malformed answer).",
    )

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self.model)
