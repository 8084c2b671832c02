"""``uptake status`` section: champion, challenger and pending approvals per managed model."""

from __future__ import annotations

from registry.managed import managed_models
from registry.mlflow_registry import Registry
from uptake.mlflow_contract import APPROVAL_PENDING, APPROVAL_TAG, DECISION_TAG
from uptake.mlflow_contract import CHALLENGER_ALIAS as CHALLENGER
from uptake.mlflow_contract import CHAMPION_ALIAS as CHAMPION
from uptake.settings import Settings
from uptake.stack.local import resolved_endpoints
from uptake.stack.probes import mlflow_healthy
from uptake.status import StatusSection


def registry_status(settings: Settings, timeout_s: float = 3.0) -> StatusSection:
    _, tracking = resolved_endpoints(settings)
    section = StatusSection(
        name="registry",
        title="registry",
        columns=["model", "champion", "challenger", "pending approval", "mode"],
    )
    if not mlflow_healthy(tracking, timeout_s):
        section.error = f"MLflow not reachable at {tracking}"
        return section
    registry = Registry(tracking)
    models = sorted(managed_models(settings))
    data = {}
    for model in models:
        aliases = registry.aliases(model)
        pending = sorted(
            (
                str(mv.version)
                for mv in registry.versions(model)
                if (mv.tags or {}).get(DECISION_TAG) == "pending_approval"
                and (mv.tags or {}).get(APPROVAL_TAG) == APPROVAL_PENDING
            ),
            key=int,
        )
        mode = settings.registry.gate_for(model).mode
        data[model] = {
            "champion": aliases.get(CHAMPION),
            "challenger": aliases.get(CHALLENGER),
            "pending_approval": pending,
            "mode": mode,
        }
        section.rows.append(
            [
                model,
                f"v{aliases[CHAMPION]}" if CHAMPION in aliases else "-",
                f"v{aliases[CHALLENGER]}" if CHALLENGER in aliases else "-",
                ", ".join(f"v{v}" for v in pending) or "-",
                mode,
            ]
        )
    section.data = data
    return section
