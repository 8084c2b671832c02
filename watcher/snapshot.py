"""What a source reports about one repo at one revision: the input of the filters."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class RepoSnapshot(BaseModel):
    """One repo at one revision, as far as the source knows it.

    A listing fills what the hub's list API returns cheaply; ``detailed`` marks a snapshot
    completed by a per-repo lookup (or a directory scan), after which unknown means absent.
    """

    model_config = ConfigDict(frozen=True)

    repo_id: str
    revision: str
    created_at: datetime | None = None
    last_modified: datetime | None = None
    pipeline_tag: str | None = None
    library: str | None = None
    tags: tuple[str, ...] = ()
    license: str | None = None
    gated: bool = False
    private: bool = False
    num_parameters: int | None = None
    quantized: bool = False
    requires_remote_code: bool = False
    files: tuple[str, ...] | None = None  # None: not known yet
    fingerprint: str | None = None  # directory sources: cheap change detector
    detailed: bool = False

    @property
    def author(self) -> str:
        return self.repo_id.partition("/")[0]
