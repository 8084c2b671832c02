"""What a source reports about one repo at one revision: the input of the filters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class RepoSnapshot:
    """One repo at one revision, as far as the source knows it.

    A listing fills what the hub's list API returns cheaply; ``detailed`` marks a snapshot
    completed by a per-repo lookup (or a directory scan), after which unknown means absent.
    A plain dataclass rather than a pydantic model: a poll builds one per listed repo (20,000
    for 200 busy authors) and it never crosses a process boundary.
    """

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
    # the source refuses this repo whatever the filters say (a reason code such as
    # ``malformed`` or ``unsafe_link``, and what exactly is wrong)
    refusal: str | None = None
    refusal_detail: str = ""

    @property
    def author(self) -> str:
        return self.repo_id.partition("/")[0]
