"""What every decision step needs, one per promoter process (or CLI command)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from registry.locks import ModelLocks
from registry.mlflow_registry import Registry
from registry.outbox import Outbox
from registry.store import StateStore
from uptake.registry_config import GateConfig
from uptake.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Context:
    """The settings, the MLflow client, the state store, the per-model lease and the outbox."""

    settings: Settings
    registry: Registry
    store: StateStore
    locks: ModelLocks
    outbox: Outbox
    producer: str = "uptake-promoter"

    def gate(self, model: str) -> GateConfig:
        return self.settings.registry.gate_for(model)

    def flush(self) -> None:
        """Publish pending events; a broker hiccup is retried by the next reconcile pass."""
        try:
            self.outbox.flush()
        except Exception as exc:
            log.warning("outbox flush failed (%s); the reconcile loop will retry", exc)
