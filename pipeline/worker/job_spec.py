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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.worker.trust import TrustedSource, trusted_source
from uptake.agent_config import AgentSettings
from uptake.cost import MAX_PRICE, Price, hour_price
from uptake.events import ReleaseDetected
from uptake.models.remote_code import scope_allowlist
from uptake.settings import Settings, TopicNames
from uptake.tracks import Track


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
    device: Literal["auto", "cpu"] = "auto"
    gpus: str | None = None  # CUDA_VISIBLE_DEVICES for the child, e.g. "0,1"
    experiment: str = "uptake-pipeline"
    stage_timeout_s: float = Field(12 * 3600.0, gt=0)
    job_deadline_s: float = Field(24 * 3600.0, gt=0)
    lease_ttl_s: float = Field(120.0, gt=0)
    heartbeat_s: float = Field(20.0, gt=0)
    transient_retries: int = Field(3, ge=0)
    retry_backoff_s: float = Field(2.0, ge=0)
    retry_backoff_max_s: float = Field(60.0, gt=0)
    eval_batch_size: int = Field(16, ge=1)
    eval_max_new_tokens: int | None = Field(None, ge=1)
    progress_interval_s: float = Field(2.0, ge=0)
    worker: str = "worker"  # identity of the worker process: lease owner, run.started
    attempt: int = Field(1, ge=1)
    # where the files come from: the configured source the release names (trust.py), never
    # the event; None: not configured, so the fetch refuses. Its token is read from env.
    source: TrustedSource | None = None
    judge_base_url: str | None = None
    judge_model: str | None = None
    # agentic suites: caps and the second judge (its key, like the judge's, from the env)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    # worker.cpu_hour_price / gpu_hour_price: the evaluation's device picks one (uptake.cost)
    cpu_hour_price: float | None = Field(None, ge=0, le=MAX_PRICE)
    gpu_hour_price: float | None = Field(None, ge=0, le=MAX_PRICE)

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

        device = resolve_device("cpu" if self.device == "cpu" else "auto").type
        return hour_price(device, cpu_hour=self.cpu_hour_price, gpu_hour=self.gpu_hour_price)


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
    w = settings.worker
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
        device=w.device,
        gpus=w.gpus,
        experiment=w.experiment,
        stage_timeout_s=w.stage_timeout_s,
        job_deadline_s=w.job_deadline_s,
        lease_ttl_s=w.lease_ttl_s,
        heartbeat_s=w.heartbeat_s,
        transient_retries=w.transient_retries,
        retry_backoff_s=w.retry_backoff_s,
        retry_backoff_max_s=w.retry_backoff_max_s,
        eval_batch_size=w.eval_batch_size,
        eval_max_new_tokens=w.eval_max_new_tokens,
        progress_interval_s=w.progress_interval_s,
        worker=worker,
        attempt=attempt,
        source=source,
        judge_base_url=settings.judge.base_url,
        judge_model=settings.judge.model,
        agent=settings.agent.model_copy(
            update={
                "second_judge": settings.agent.second_judge.model_copy(update={"api_key": None})
            }
        ),
        cpu_hour_price=w.cpu_hour_price,
        gpu_hour_price=w.gpu_hour_price,
    )
