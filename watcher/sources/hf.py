"""The ``hf`` source: the Hugging Face Hub, or any HF-compatible endpoint, via ``HfApi``.

One poll costs one ``list_models`` request per author (newest first, ``limit`` repos, with
the fields the filters need expanded); ``model_info(repo, revision=sha)`` is called only for
candidates. The first run lists each author exhaustively (following pages) so that the
baseline holds every repo that already exists; later, if even the oldest repo of an author's
window is new, that author is listed exhaustively once more to catch up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from huggingface_hub import HfApi, ModelInfo
from huggingface_hub.errors import (
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from uptake.errors import ConfigError
from uptake.settings import Settings
from uptake.urls import redact_userinfo
from uptake.watcher_config import HfSourceConfig
from watcher.faults import SourceFault
from watcher.snapshot import RepoSnapshot
from watcher.sources.hub_http import HubScope, hub_scope, install
from watcher.store import KnownRepo

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
# What a listing asks for: enough to tell new from known (sha) and to reject most repos
# without a lookup (tags carry license, gguf/awq, custom_code). Dates and safetensors are
# left to model_info: parsing them for every listed repo was most of a poll's CPU time.
LIST_EXPAND: list[Any] = ["sha", "pipeline_tag", "library_name", "tags", "gated"]
# what the library raises on JSON it cannot map (RecursionError: deeply nested JSON)
_MALFORMED = (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError)


def _license(info: ModelInfo) -> str | None:
    card = info.card_data
    value = getattr(card, "license", None) if card is not None else None
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value) if value else None


def snapshot_from_info(info: ModelInfo, *, detailed: bool) -> RepoSnapshot:
    """Translate the library's ModelInfo; a repo without id or sha is malformed data."""
    if not isinstance(info.id, str) or "/" not in info.id or not isinstance(info.sha, str):
        raise SourceFault("malformed", f"hub item without a valid id and sha: {info.id!r}")
    tags = tuple(map(str, info.tags or ()))
    config = info.config if isinstance(info.config, dict) else {}
    files = None
    if detailed and info.siblings is not None:
        files = tuple(s.rfilename for s in info.siblings)
    return RepoSnapshot(
        repo_id=info.id,
        revision=info.sha,
        created_at=info.created_at,
        last_modified=info.last_modified,
        pipeline_tag=info.pipeline_tag,
        library=info.library_name,
        tags=tags,
        license=_license(info),
        gated=bool(info.gated),
        private=bool(info.private),
        num_parameters=info.safetensors.total if info.safetensors is not None else None,
        quantized=bool(config.get("quantization_config")),
        requires_remote_code="custom_code" in tags or bool(config.get("auto_map")),
        files=files,
        detailed=detailed,
    )


class HfSource:
    def __init__(self, config: HfSourceConfig, settings: Settings) -> None:
        install()
        self.config = config
        self._endpoint = config.endpoint.rstrip("/")  # user-info, if any, is sent as basic auth
        self._public = redact_userinfo(self._endpoint)  # what events and logs may show
        self._host = urlsplit(self._public).netloc
        token = self._token(settings)
        self._has_token = token is not None
        # token=False: never fall back to a token saved on this machine (it could be sent
        # to a mirror); gated repos are skipped unless a token is configured for the source.
        self.api = HfApi(endpoint=self._endpoint, token=token or False, library_name="uptake")
        self.on_request = lambda: None  # the service counts requests in its metrics

    def _token(self, settings: Settings) -> str | None:
        if self.config.token_env:
            value = os.environ.get(self.config.token_env)
            if not value:
                raise ConfigError(
                    f"source {self.config.name}: token_env {self.config.token_env} is not set"
                )
            return value
        if settings.hf_token is not None and self._endpoint == DEFAULT_ENDPOINT:
            return settings.hf_token.get_secret_value()
        return None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def endpoint(self) -> str:
        return self._public

    @property
    def has_token(self) -> bool:
        return self._has_token

    def location(self, repo_id: str) -> str:
        return self._public

    def _scope(self) -> Any:
        return hub_scope(
            HubScope(
                self.config.name,
                self._host,
                self.config.timeout_s,
                self.on_request,
                self.config.max_response_bytes,
            )
        )

    # -- listing ----------------------------------------------------------------------------

    def scope(self) -> list[str]:
        if self.config.authors:
            return [a.lower() for a in self.config.authors]
        return [f"search:{self.config.search}"]

    def scope_of(self, snap: RepoSnapshot) -> str:
        return snap.author.lower() if self.config.authors else f"search:{self.config.search}"

    def scan(
        self, known: Mapping[str, KnownRepo] | None, fresh: frozenset[str] = frozenset()
    ) -> list[RepoSnapshot]:
        queries: list[str | None] = list(self.config.authors) or [None]
        keys = self.scope()

        def listing(i: int) -> list[RepoSnapshot]:
            return self._scan_author(queries[i], None if keys[i] in fresh else known)

        workers = min(self.config.concurrency, len(queries))
        if workers <= 1:
            listings = [listing(i) for i in range(len(queries))]
        else:
            # all or nothing: the first failure cancels what has not started and is raised
            pool = ThreadPoolExecutor(workers, thread_name_prefix=f"hf-{self.name}")
            try:
                futures = [pool.submit(listing, i) for i in range(len(queries))]
                listings = [f.result() for f in futures]
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        found: dict[str, RepoSnapshot] = {}
        for snaps in listings:
            for snap in snaps:
                found[snap.repo_id] = snap
        return list(found.values())

    def _scan_author(
        self, author: str | None, known: Mapping[str, KnownRepo] | None
    ) -> list[RepoSnapshot]:
        limit = None if known is None else self.config.limit
        snaps = self._list(author, limit)
        if (
            known is not None
            and len(snaps) >= self.config.limit
            and not self._known(snaps[-1], known)
        ):
            log.info(
                "source %s: all %d newest repos of %s are new; listing them all",
                self.name,
                len(snaps),
                author or self.config.search,
            )
            snaps = self._list(author, None)
        return snaps

    def _known(self, snap: RepoSnapshot, known: Mapping[str, KnownRepo]) -> bool:
        row = known.get(snap.repo_id)
        if row is None:
            return False
        return row.revision == snap.revision if self.config.track_updates else True

    def _list(self, author: str | None, limit: int | None) -> list[RepoSnapshot]:
        sort: Any = "last_modified" if self.config.track_updates else "created_at"
        # the first run lists exhaustively; backfill needs to know which repos are newest
        expand = [*LIST_EXPAND, "createdAt"] if limit is None else LIST_EXPAND
        what = f"list_models(author={author!r})"
        with self._scope():
            try:
                infos = list(
                    self.api.list_models(
                        author=author,
                        search=self.config.search,
                        sort=sort,
                        limit=limit,
                        expand=expand,
                    )
                )
            except HfHubHTTPError as exc:
                raise self._http_fault(what, exc) from exc
            except _MALFORMED as exc:
                raise SourceFault("malformed", f"{what}: {type(exc).__name__}: {exc}") from exc
            try:
                return [snapshot_from_info(i, detailed=False) for i in infos]
            except _MALFORMED as exc:
                raise SourceFault("malformed", f"{what}: {type(exc).__name__}: {exc}") from exc

    # -- per-repo lookups -------------------------------------------------------------------

    def details(self, snap: RepoSnapshot) -> RepoSnapshot | None:
        return self._info(snap.repo_id, snap.revision)

    def lookup(self, repo_id: str) -> RepoSnapshot | None:
        return self._info(repo_id, None)

    def _info(self, repo_id: str, revision: str | None) -> RepoSnapshot | None:
        what = f"model_info({repo_id}@{revision or 'main'})"
        with self._scope():
            try:
                info = self.api.model_info(repo_id, revision=revision)
            except (RepositoryNotFoundError, RevisionNotFoundError):
                return None
            except HfHubHTTPError as exc:
                if exc.response is not None and exc.response.status_code == 404:
                    return None
                raise self._http_fault(what, exc) from exc
            except _MALFORMED as exc:
                raise SourceFault("malformed", f"{what}: {type(exc).__name__}: {exc}") from exc
        try:
            return snapshot_from_info(info, detailed=True)
        except _MALFORMED as exc:
            raise SourceFault("malformed", f"{what}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _http_fault(what: str, exc: HfHubHTTPError) -> SourceFault:
        status = exc.response.status_code if exc.response is not None else None
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return SourceFault("http_error", f"{what}: {first}", status=status)

    def watches(self, repo_id: str) -> bool:
        author = repo_id.partition("/")[0].lower()
        if self.config.authors:
            return author in {a.lower() for a in self.config.authors}
        return (self.config.search or "").lower() in repo_id.lower()

    def close(self) -> None:
        pass
