"""What preflight found and did: refusals, adapters, notes, and the decisions every run logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from pipeline.train.hardware import ResolvedHardware
from uptake.errors import InputError
from uptake.mlflow_contract import TAG_VALUE_MAX


class PreflightError(InputError):
    """The model was refused; the message lists every reason."""


class Adapter(BaseModel):
    """One change preflight made so the recipe works on this model."""

    name: str
    action: str
    reason: str


class Refusal(BaseModel):
    check: str
    reason: str


class PreflightReport(BaseModel):
    """What preflight found and did. Printed by the CLI, logged to MLflow as params and tags."""

    model_dir: str
    repo_id: str | None = None
    model_type: str | None = None
    architecture: str | None = None
    num_parameters: int | None = None
    context_length: int | None = None
    max_length: int
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    packing: bool = False
    gradient_checkpointing: bool = False
    eos_token: str | None = None
    end_of_turn_token: str | None = None
    pad_token: str | None = None
    stop_tokens: list[str] = Field(default_factory=list)
    added_tokens: list[str] = Field(default_factory=list)
    adapters: list[Adapter] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def adapter_names(self) -> list[str]:
        return [a.name for a in self.adapters]

    def adapter(self, name: str) -> Adapter | None:
        return next((a for a in self.adapters if a.name == name), None)

    def raise_if_refused(self) -> None:
        if self.refusals:
            reasons = "; ".join(f"{r.check}: {r.reason}" for r in self.refusals)
            raise PreflightError(f"preflight refused {self.model_dir}: {reasons}")

    def mlflow_params(self) -> dict[str, str]:
        """Flat params: one per adapter plus the decisions every run has."""
        params = {
            "preflight.adapters": ",".join(self.adapter_names) or "none",
            "preflight.max_length": str(self.max_length),
            "preflight.attn_implementation": str(self.attn_implementation),
            "preflight.packing": str(self.packing),
            "preflight.gradient_checkpointing": str(self.gradient_checkpointing),
            "preflight.trust_remote_code": str(self.trust_remote_code),
            "preflight.eos_token": str(self.eos_token),
            "preflight.pad_token": str(self.pad_token),
        }
        for a in self.adapters:
            params[f"preflight.adapter.{a.name}"] = a.action[:500]
        return params

    def mlflow_tags(self) -> dict[str, str]:
        """Tags: what was adapted, whether it passed, and why not (refusals), plus the notes
        (packing, checkpointing, ... decisions) so they are searchable, not only in artifacts."""
        tags = {
            "uptake.preflight.adapters": ",".join(self.adapter_names) or "none",
            "uptake.preflight.ok": str(self.ok).lower(),
        }
        if self.refusals:
            reasons = "; ".join(f"{r.check}: {r.reason}" for r in self.refusals)
            tags["uptake.preflight.refusals"] = reasons[:TAG_VALUE_MAX]
        if self.notes:
            tags["uptake.preflight.notes"] = "; ".join(self.notes)[:TAG_VALUE_MAX]
        return tags

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        out = [
            f"model       {self.model_dir} ({self.architecture or self.model_type or '?'}, "
            f"{_human(self.num_parameters)} params, context {self.context_length or '?'})",
            f"training    max_length {self.max_length}, attention {self.attn_implementation}, "
            f"packing {'on' if self.packing else 'off'}, gradient checkpointing "
            f"{'on' if self.gradient_checkpointing else 'off'}",
            f"tokens      eos {self.eos_token!r}, end of turn {self.end_of_turn_token!r}, "
            f"pad {self.pad_token!r}",
        ]
        out += [f"adapter     {a.name}: {a.action} — {a.reason}" for a in self.adapters]
        out += [f"note        {n}" for n in self.notes]
        out += [f"REFUSED     {r.check}: {r.reason}" for r in self.refusals]
        return out


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


@dataclass
class Prepared:
    """Preflight's working result: the report plus the adapted tokenizer and config."""

    report: PreflightReport
    hardware: ResolvedHardware
    tokenizer: Any = None
    config: Any = None
    model_class: Any = None
    stop_token_ids: list[int] = field(default_factory=list)
