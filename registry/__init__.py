"""Registry: the promotion gate, approvals, rollback, audit trail and on-call alerts.

Layout (one job per module): ``evidence`` (what a version's run says), ``gate`` (the rule,
pure), ``decision`` (the decision object), ``mlflow_registry`` (every MLflow call),
``db``/``store`` (state store), ``locks`` (per-model lease), ``outbox`` (events with their
state), ``promotion`` (the one path that moves ``champion``), ``decide`` /
``candidates`` / ``approvals`` / ``rollback`` (the decision paths), ``audit`` (history and
its MLflow mirror), ``webhook_receiver`` + ``reconcile`` (how approvals are noticed),
``service`` / ``cli`` / ``status`` (running it), ``alerts/`` (on-call). See docs/registry.md.
"""
