"""Registry: the promotion gate, approvals, rollback, audit trail and on-call alerts.

A decision is three steps, one module each: ``evidence`` (1. gather: what MLflow says about
the candidate, the champion of now, the base model and the per-task outcomes), ``gate``
(2. judge: the rule, pure) with ``decision`` (the record it produces), ``enact`` (3. carry it
out: record once, move ``champion`` by compare-and-set, mirror to MLflow). ``decide`` runs the
three for a new candidate and for a person's approval. Around them: ``context`` (what every
step needs), ``mlflow_registry`` (the thin MLflow client), ``db``/``store`` (state store),
``locks`` (per-model lease), ``outbox`` (events with their state), ``rollback`` (a person's
decision, enacted without the gate), ``audit`` (history and its MLflow mirror),
``webhook_receiver`` + ``reconcile`` (how approvals are noticed), ``service`` / ``cli`` /
``status`` (running it), ``alerts/`` (on-call). MLflow names: ``uptake.mlflow_contract``.
See docs/registry.md.
"""
