"""An in-memory ``WorkerMlflow`` for the job's pure tests: runs, tags, versions and aliases in
dicts, every call counted by name (the job's bookkeeping requests, as ``bench/pipeline.py``
counts them on a real server)."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace

from pipeline.worker.lease import LeaseState, lease_of_tags
from pipeline.worker.mlflow_front import ModelVersion, Run, clip, lease_tags
from pipeline.worker.tags import JOB_KEY_TAG


class FakeMlflow:
    """``WorkerMlflow`` in memory. ``on_call`` runs before each call with its name (a test's
    other worker acting in between the job's requests)."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.experiments: dict[str, str] = {}
        self.versions: dict[str, list[ModelVersion]] = {}
        self.aliases: dict[tuple[str, str], str] = {}
        self.calls: Counter[str] = Counter()
        self.on_call: Callable[[str], None] | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # the lease's heartbeat thread calls in too

    def _call(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1
        if self.on_call is not None:
            self.on_call(name)

    # -- helpers for tests ----------------------------------------------------------------------

    def add_run(self, experiment: str, tags: Mapping[str, str], status: str = "RUNNING") -> Run:
        exp_id = self.experiments.setdefault(experiment, str(len(self.experiments) + 1))
        rid = f"run{next(self._ids)}"
        run = Run(rid, exp_id, status, int(time.time() * 1000), f"mem://{rid}", dict(tags))
        self.runs[rid] = run
        return run

    def add_version(self, model: str, run_id: str, tags: Mapping[str, str]) -> ModelVersion:
        found = self.versions.setdefault(model, [])
        version = ModelVersion(model, str(len(found) + 1), run_id, dict(tags))
        found.append(version)
        return version

    def update(self, run_id: str, **changes: object) -> None:
        with self._lock:
            self.runs[run_id] = replace(self.runs[run_id], **changes)

    # -- WorkerMlflow --------------------------------------------------------------------------

    def job_run(self, experiment: str, key_digest: str, tags: Mapping[str, str]) -> Run:
        self._call("job_run")
        exp_id = self.experiments.get(experiment)
        found = sorted(
            (
                r
                for r in self.runs.values()
                if r.experiment_id == exp_id and r.tags.get(JOB_KEY_TAG) == key_digest
            ),
            key=lambda r: (r.start_time, r.run_id),
        )
        if found:
            return found[0]
        return self.add_run(experiment, {**clip(tags), JOB_KEY_TAG: key_digest})

    def get_run(self, run_id: str) -> Run:
        self._call("get_run")
        return self.runs[run_id]

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self._call("set_tags")
        with self._lock:
            run = self.runs[run_id]
            self.runs[run_id] = replace(run, tags={**run.tags, **clip(tags)})

    def delete_tag(self, run_id: str, name: str) -> None:
        self._call("delete_tag")
        with self._lock:
            run = self.runs[run_id]
            self.runs[run_id] = replace(run, tags={k: v for k, v in run.tags.items() if k != name})

    def set_status(self, run_id: str, status: str) -> None:
        self._call("set_status")
        self.update(run_id, status=status)

    def set_oom_note(self, run_id: str, name: str, note: str) -> None:
        self._call("set_oom_note")
        with self._lock:
            run = self.runs[run_id]
            self.runs[run_id] = replace(run, tags={**run.tags, name: note})

    def versions_of_key(self, registered_model: str, key_digest: str) -> list[ModelVersion]:
        self._call("versions_of_key")
        found = self.versions.get(registered_model, [])
        return [v for v in found if v.tags.get(JOB_KEY_TAG) == key_digest]

    def create_version(
        self, registered_model: str, run: Run, key_digest: str, tags: Mapping[str, str]
    ) -> tuple[ModelVersion, bool]:
        self._call("create_version")
        earlier = [
            v
            for v in self.versions.get(registered_model, [])
            if v.tags.get(JOB_KEY_TAG) == key_digest
        ]
        if earlier:  # as the real front settles a race: the lower number stays
            return earlier[0], False
        version = self.add_version(
            registered_model, run.run_id, {**clip(tags), JOB_KEY_TAG: key_digest}
        )
        return version, True

    def set_challenger(self, registered_model: str, version: str) -> None:
        self._call("set_challenger")
        self.aliases[(registered_model, "challenger")] = version

    def read(self, run_id: str) -> LeaseState:
        return lease_of_tags(self.get_run(run_id).tags)

    def write(self, run_id: str, owner: str, expires: float, generation: int) -> None:
        self.set_tags(run_id, lease_tags(owner, expires, generation))
