"""The worker's MLflow, typed: the few operations a job makes, behind one ``WorkerMlflow``.

``Job`` talks to MLflow only through this front (the stages' training and evaluation logging
aside, which go through ``pipeline.train`` and ``pipeline.eval``): find or create the job's
run, write its tags in batches, read and write its lease, look up and create the key's model
version. ``MlflowFront`` is the real one over ``MlflowClient``; the pure tests hand the job an
in-memory one (tests/worker/fake_mlflow.py), like ``registry/mlflow_registry.py`` for the
promoter. Every method is one request unless its docstring says otherwise, so the job's
bookkeeping cost can be read off its calls (``bench/pipeline.py`` counts them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.worker.lease import LeaseState, lease_of_tags
from pipeline.worker.tags import (
    JOB_KEY_TAG,
    LEASE_EXPIRES_TAG,
    LEASE_GENERATION_TAG,
    LEASE_OWNER_TAG,
)
from uptake.mlflow_contract import CHALLENGER_ALIAS, TAG_VALUE_MAX

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class Run:
    """A job's run as the worker reads it."""

    run_id: str
    experiment_id: str
    status: str  # RUNNING, FINISHED, FAILED, ...
    start_time: int  # ms since the epoch
    artifact_uri: str
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version as the worker reads it."""

    name: str
    version: str
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)


class WorkerMlflow(Protocol):
    """What a job asks of MLflow. It is also the lease's ``LeaseStore`` (``read``/``write``)."""

    def job_run(self, experiment: str, key_digest: str, tags: Mapping[str, str]) -> Run:
        """The key's run: the oldest live one, else one created now with ``tags`` (a racing
        duplicate is deleted, so the key keeps one run). Several requests."""

    def get_run(self, run_id: str) -> Run: ...

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None: ...

    def delete_tag(self, run_id: str, name: str) -> None: ...

    def set_status(self, run_id: str, status: str) -> None:
        """RUNNING, or a terminal status (FINISHED, FAILED) with its end time."""

    def set_oom_note(self, run_id: str, name: str, note: str) -> None:
        """One tag written at once (the OOM retry: it must be there if the retry dies)."""

    def versions_of_key(self, registered_model: str, key_digest: str) -> list[ModelVersion]:
        """The versions tagged with the job key, lowest number first."""

    def create_version(
        self, registered_model: str, run: Run, key_digest: str, tags: Mapping[str, str]
    ) -> tuple[ModelVersion, bool]:
        """A version of ``run``'s model tagged with the key, and whether it is the key's
        (False: a racing worker's version was first; ours is deleted and theirs returned)."""

    def set_challenger(self, registered_model: str, version: str) -> None: ...

    def read(self, run_id: str) -> LeaseState: ...

    def write(self, run_id: str, owner: str, expires: float, generation: int) -> None: ...


def lease_tags(owner: str, expires: float, generation: int) -> dict[str, str]:
    return {
        LEASE_OWNER_TAG: owner,
        LEASE_EXPIRES_TAG: f"{expires:.3f}",
        LEASE_GENERATION_TAG: str(generation),
    }


def clip(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: str(v)[:TAG_VALUE_MAX] for k, v in tags.items()}


def _run(run: Any) -> Run:
    return Run(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        start_time=run.info.start_time or 0,
        artifact_uri=run.info.artifact_uri or "",
        tags=dict(run.data.tags),
        metrics=dict(run.data.metrics),
    )


def _version(mv: Any) -> ModelVersion:
    return ModelVersion(
        name=mv.name, version=str(mv.version), run_id=mv.run_id or "", tags=dict(mv.tags or {})
    )


class MlflowFront:
    """``WorkerMlflow`` over an ``MlflowClient`` (tracking and registry on one server)."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    @classmethod
    def at(cls, tracking_uri: str) -> MlflowFront:
        from mlflow import MlflowClient

        return cls(MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri))

    def _find(self, exp_id: str, key_digest: str) -> list[Run]:
        from mlflow.entities import ViewType

        runs = self.client.search_runs(
            [exp_id],
            filter_string=f"tags.`{JOB_KEY_TAG}` = '{key_digest}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=100,
        )
        return sorted((_run(r) for r in runs), key=lambda r: (r.start_time, r.run_id))

    def job_run(self, experiment: str, key_digest: str, tags: Mapping[str, str]) -> Run:
        from pipeline.train.mlflow_log import ensure_experiment

        exp_id = ensure_experiment(self.client, experiment)
        found = self._find(exp_id, key_digest)
        if found:
            return found[0]
        created = self.client.create_run(exp_id, tags={**clip(tags), JOB_KEY_TAG: key_digest})
        found = self._find(exp_id, key_digest)  # a racing worker may have created one too
        winner = found[0] if found else _run(created)
        if winner.run_id != created.info.run_id:
            self.client.delete_run(created.info.run_id)
        return winner

    def get_run(self, run_id: str) -> Run:
        return _run(self.client.get_run(run_id))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in clip(tags).items()])

    def delete_tag(self, run_id: str, name: str) -> None:
        self.client.delete_tag(run_id, name)

    def set_status(self, run_id: str, status: str) -> None:
        if status == "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, status)

    def set_oom_note(self, run_id: str, name: str, note: str) -> None:
        self.client.set_tag(run_id, name, note)

    def versions_of_key(self, registered_model: str, key_digest: str) -> list[ModelVersion]:
        found = self.client.search_model_versions(
            f"name = '{registered_model}' and tags.`{JOB_KEY_TAG}` = '{key_digest}'"
        )
        return sorted((_version(mv) for mv in found), key=lambda mv: int(mv.version))

    def create_version(
        self, registered_model: str, run: Run, key_digest: str, tags: Mapping[str, str]
    ) -> tuple[ModelVersion, bool]:
        from mlflow.exceptions import MlflowException

        def create() -> ModelVersion:
            return _version(
                self.client.create_model_version(
                    registered_model,
                    f"{run.artifact_uri}/model",
                    run_id=run.run_id,
                    tags={**clip(tags), JOB_KEY_TAG: key_digest},
                )
            )

        try:
            created = create()
        except MlflowException as exc:  # the track's first version: create its model first
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            try:
                self.client.create_registered_model(registered_model)
            except MlflowException as again:
                if again.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            created = create()
        found = self.versions_of_key(registered_model, key_digest)
        winner = found[0] if found else created
        if winner.version != created.version:
            self.client.delete_model_version(registered_model, created.version)
            return winner, False
        return created, True

    def set_challenger(self, registered_model: str, version: str) -> None:
        self.client.set_registered_model_alias(registered_model, CHALLENGER_ALIAS, version)

    def read(self, run_id: str) -> LeaseState:
        return lease_of_tags(self.get_run(run_id).tags)

    def write(self, run_id: str, owner: str, expires: float, generation: int) -> None:
        self.set_tags(run_id, lease_tags(owner, expires, generation))
