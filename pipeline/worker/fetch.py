"""Stage ``fetch``: bring a release's files under the state dir, once per revision.

Hub releases come through ``huggingface_hub.snapshot_download`` with an allow-list of file
patterns: safetensors, JSON configs, tokenizer files, chat templates, vocab/merges text and
sentencepiece models; never pickled weights (``*.bin``, ``*.pt``, ``*.pkl``); the model's own
Python only when its repo is on the remote-code allow-list (preflight decides the rest).
Where the files come from is the configured source the event names (``trust.py``): the hub
endpoint and the token variable (``token_env``) of a hub source, the folder under a dir
source's root; an event that disagrees is refused before any request or copy (the bus is
untrusted, DESIGN.md "Trust"). Directory releases are copied and their
content hash compared with the revision the watcher published: a drop that changed since it
was detected is refused (a new revision will be detected). A link that leaves the folder is
refused either way.

The copy lands in ``<state>/models/<repo>/<revision>``; it is written to ``….partial`` and
renamed once complete, so a killed fetch resumes and a finished one is reused; a fetch that
runs out of disk removes its partial copy (``disk_full``: nothing to resume, bytes to free).
A lock file keeps two tracks (or two jobs) of one revision from fetching it at once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.worker.failures import is_disk_full
from pipeline.worker.job_spec import safe_name
from pipeline.worker.trust import TrustedSource, check_release, release_folder
from uptake.errors import PermanentError
from uptake.events import ReleaseDetected
from uptake.models.files import folder_content_hash as content_hash
from uptake.models.remote_code import is_allowlisted

ALLOW_PATTERNS = [
    "*.safetensors",
    "*.json",
    "*.jinja",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "tokenizer*",
    "README.md",
]
NEVER = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.h5", "*.msgpack", "*.npz")
COMPLETE_MARK = ".uptake-fetched"
_CHUNK = 1 << 20


class FetchRefused(PermanentError):
    """The release's files cannot be used as they are (a link out, a changed drop)."""


def model_dir_for(state_dir: Path, release: ReleaseDetected) -> Path:
    return state_dir / "models" / safe_name(release.repo_id) / safe_name(release.revision)


def visible_files(folder: Path) -> tuple[str, ...]:
    """Repo-relative posix paths of the regular files not under a dot-name (as the dir
    source lists them); raises FetchRefused for a link that leaves ``folder``."""
    real = Path(os.path.realpath(folder))
    files = []
    for item in sorted(folder.rglob("*")):
        rel = item.relative_to(folder)
        if item.is_symlink() and not Path(os.path.realpath(item)).is_relative_to(real):
            raise FetchRefused(f"{rel.as_posix()} links outside the model folder; not read")
        if item.is_file() and not any(part.startswith(".") for part in rel.parts):
            files.append(rel.as_posix())
    return tuple(files)


def _copy_dir(release: ReleaseDetected, partial: Path, origin: TrustedSource) -> None:
    source = release_folder(origin, release)
    if not source.is_dir():
        raise FileNotFoundError(f"release folder {str(source)!r} is not readable")
    if source.is_symlink():
        raise FetchRefused(f"{source} is a link; not read")
    files = visible_files(source)
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    for rel in files:
        target = partial / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, target)  # a link inside the folder becomes its bytes
    got = content_hash(partial, files)
    if got != release.revision:
        raise FetchRefused(
            f"{source} changed since it was detected (content hash {got[:12]}, release "
            f"{release.revision[:12]}); its new revision is a new release"
        )


def _download_hub(
    release: ReleaseDetected, partial: Path, origin: TrustedSource, allowlist: list[str]
) -> None:
    from huggingface_hub import snapshot_download

    token = os.environ.get(origin.token_env) if origin.token_env else None
    patterns = list(ALLOW_PATTERNS)
    if is_allowlisted(allowlist, release.repo_id, partial):
        patterns.append("*.py")  # allow-listed remote code: preflight decides whether it runs
    snapshot_download(
        release.repo_id,
        revision=release.revision,
        local_dir=partial,
        allow_patterns=patterns,
        ignore_patterns=list(NEVER),
        endpoint=origin.endpoint,
        token=token or False,
        max_workers=4,
    )
    visible_files(partial)  # a link leaving the folder is refused


def fetch_release(
    release: ReleaseDetected,
    state_dir: Path,
    *,
    source: TrustedSource | None,
    allowlist: list[str] | None = None,
    lock_timeout_s: float = 6 * 3600.0,
) -> tuple[Path, bool]:
    """The release's model folder (fetched now or earlier) and whether it was fetched now.

    ``source`` is the configured source the release names (``trust.trusted_source``); without
    one nothing is fetched: the event alone never says where files come from."""
    from filelock import FileLock

    if source is None:
        raise FetchRefused(
            f"release {release.release_id}: source {release.source!r} is not configured; "
            "the worker fetches only from its own sources"
        )
    check_release(source, release)

    final = model_dir_for(state_dir, release)
    if (final / COMPLETE_MARK).is_file():
        return final, False
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock", timeout=lock_timeout_s):
        if (final / COMPLETE_MARK).is_file():  # another track fetched it while we waited
            return final, False
        partial = final.with_name(final.name + ".partial")
        try:
            if source.kind == "dir":
                _copy_dir(release, partial, source)
            else:
                _download_hub(release, partial, source, allowlist or [])
        except Exception as exc:
            if is_disk_full(exc):  # no room: a resume cannot help, the bytes can be given back
                shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(partial / ".cache", ignore_errors=True)  # the hub client's bookkeeping
        (partial / COMPLETE_MARK).write_text(release.release_id + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
    return final, True
