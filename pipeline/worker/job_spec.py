"""``JobSpec``: everything one adoption job needs, handed to the spawned child as one object.

The service (``service.py``) builds one spec per (release, matching track) and starts
``run_job(spec)`` in a child with ``uptake.bus.LongJob``; the child reads no settings file, so
the spec carries what it needs: the release, the track (paths resolved), MLflow, the state dir,
the broker and topics for its own events, the remote-code allow-list and the device. It is a
pydantic model (validated at the boundary) and picklable (the child is spawned).

``job_key(spec)`` is the idempotency key of DESIGN.md "Adoption tracks": (release id, track,
recipe sha, suite sha). Two deliveries of one release to one unchanged track share it; a new
recipe or suite is new work.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.worker.trust import TrustedSource, trusted_source
from uptake.agent_config import AgentSettings
from uptake.cost import Price, hour_price
from uptake.events import ReleaseDetected
from uptake.models.remote_code import scope_allowlist
from uptake.settings import Settings, TopicNames
from uptake.tracks import Track
from uptake.worker_config import WorkerSettings


class JobKey(BaseModel):
    """The idempotency key of one job; ``digest`` is what MLflow tags and searches hold."""

    model_config = ConfigDict(frozen=True)

    release_id: str
    track: str
    recipe_sha: str
    suite_sha: str

    @property
    def digest(self) -> str:
        text = "\0".join((self.release_id, self.track, self.recipe_sha, self.suite_sha))
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class JobSpec(BaseModel):
    """One job: adopt ``release`` into ``track``. See the module docstring."""

    model_config = ConfigDict(frozen=True)

    release: ReleaseDetected
    track: Track
    tracking_uri: str
    state_dir: Path
    kafka_bootstrap: str
    topics: TopicNames = TopicNames()
    client_id: str = "uptake"
    # trust_remote_code_allowlist scoped to the release's source (remote_code.scope_allowlist):
    # plain repo-id patterns (and paths) that apply to this release; everything downstream
    # (fetch, preflight, training, evaluation) matches the release's repo id against them
    allowlist: list[str] = Field(default_factory=list)
    # the worker: section as configured (device, limits, lease, retries, evaluation, prices)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    identity: str = "worker"  # the worker process's identity: lease owner, run.started
    attempt: int = Field(1, ge=1)
    # where the files come from: the configured source the release names (trust.py), never
    # the event; None: not configured, so the fetch refuses. Its token is read from env.
    source: TrustedSource | None = None
    judge_base_url: str | None = None
    judge_model: str | None = None
    # agentic suites: caps and the second judge (its key, like the judge's, from the env)
    agent: AgentSettings = Field(default_factory=AgentSettings)

    @property
    def recipe_sha(self) -> str:
        return file_sha256(self.track.recipe)

    @property
    def suite_sha(self) -> str:
        from pipeline.eval.suites import suite_sha256  # a JSONL file, or a LAB task directory

        return suite_sha256(self.track.suite)

    def eval_price(self) -> Price | None:
        """The hour price of the device this job evaluates on, resolved as the evaluation
        resolves it (``device: cpu``, else CUDA when there is one); None: no price for it."""
        from uptake.models.loader import resolve_device

        device = resolve_device("cpu" if self.worker.device == "cpu" else "auto").type
        w = self.worker
        return hour_price(device, cpu_hour=w.cpu_hour_price, gpu_hour=w.gpu_hour_price)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (what the recipe loader and the suite loader record)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def job_key(spec: JobSpec) -> JobKey:
    """(release id, track, recipe sha, suite sha) of ``spec``."""
    return JobKey(
        release_id=spec.release.release_id,
        track=spec.track.name,
        recipe_sha=spec.recipe_sha,
        suite_sha=spec.suite_sha,
    )


_SAFE = re.compile(r"[^A-Za-z0-9._-]")


SAFE_NAME_CHARS = 120  # the readable part; a changed or cut name gets "-<12 hex>" after it


def safe_name(text: str) -> str:
    """A path component for ``text`` (a repo id, a revision): never ``..`` or a separator.

    A name that is already safe and short stays as it is; any other (characters replaced, or
    cut to ``SAFE_NAME_CHARS``) keeps a readable prefix and gets a short hash of the whole
    text, so two ids that differ only past the cut never share a folder."""
    cleaned = _SAFE.sub("_", text).strip(".") or "_"
    if cleaned == text and len(text) <= SAFE_NAME_CHARS:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{cleaned[:SAFE_NAME_CHARS]}-{digest}"


def spec_for(
    settings: Settings,
    release: ReleaseDetected,
    track: Track,
    *,
    worker: str,
    attempt: int = 1,
) -> JobSpec:
    """The spec of one job from the service's settings (what ``uptake worker`` does).

    Raises ``trust.SourceRefused`` (permanent) when the release's source is not configured or
    the event disagrees with it: no child starts, no request goes out."""
    source = trusted_source(settings.sources, release)
    return JobSpec(
        release=release,
        track=track,
        tracking_uri=settings.tracking_uri,
        state_dir=settings.state_dir,
        kafka_bootstrap=settings.kafka_bootstrap or f"127.0.0.1:{settings.kafka.embedded_port}",
        topics=settings.kafka.topics,
        client_id=settings.kafka.client_id,
        allowlist=scope_allowlist(settings.trust_remote_code_allowlist, source.name, source.kind),
        worker=settings.worker,
        identity=worker,
        attempt=attempt,
        source=source,
        judge_base_url=settings.judge.base_url,
        judge_model=settings.judge.model,
        agent=settings.agent.model_copy(
            update={
                "second_judge": settings.agent.second_judge.model_copy(update={"api_key": None})
            }
        ),
    )
