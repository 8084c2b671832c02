"""Filters: is this repo a base model worth adopting? Every "no" carries a reason.

``evaluate`` runs twice per candidate: on the cheap listing (unknown fields pass, so only
clear rejections stop it before the per-repo lookup) and on the detailed snapshot (unknown
now means absent). A ``defer`` is a "not yet": the upload looks unfinished or the hub has not
computed the parameter count, so the repo is looked at again on later polls until its source's
``settle_s`` time has passed, after which the deferral becomes a skip with the same reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from uptake.watcher_config import Filters
from watcher.snapshot import RepoSnapshot

QUANTIZED_TAGS = frozenset(
    {"gguf", "awq", "gptq", "fp8", "4-bit", "8-bit", "bitsandbytes", "exl2", "compressed-tensors"}
)
OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.safetensors$")


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["accept", "skip", "defer"]
    reason: str = ""  # a short stable code: "license", "excluded", "incomplete", ...
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome == "accept"


ACCEPT = Verdict("accept")


def _skip(reason: str, detail: str) -> Verdict:
    return Verdict("skip", reason, detail)


def license_of(snap: RepoSnapshot) -> str | None:
    if snap.license:
        return snap.license.lower()
    for tag in snap.tags:
        if tag.startswith("license:"):
            return tag.partition(":")[2].lower()
    return None


def is_quantized(snap: RepoSnapshot) -> bool:
    return snap.quantized or any(t.lower() in QUANTIZED_TAGS for t in snap.tags)


def _matches(repo_id: str, patterns: list[str]) -> str | None:
    for pattern in patterns:
        if fnmatchcase(repo_id.lower(), pattern.lower()):
            return pattern
    return None


def weights_verdict(files: tuple[str, ...]) -> Verdict:
    """Complete safetensors weights and a config, or why not (files are repo-relative paths)."""
    names = {f.rsplit("/", 1)[-1] for f in files}
    safetensors = sorted(n for n in names if n.endswith(".safetensors"))
    if not safetensors:
        if any(n.endswith(OTHER_WEIGHTS) for n in names):
            return _skip("no_safetensors", "weights are not in safetensors format")
        return Verdict("defer", "incomplete", "no safetensors weights yet")
    if "config.json" not in names:
        return Verdict("defer", "incomplete", "no config.json yet")
    shards: dict[tuple[str, int], set[int]] = {}
    for name in safetensors:
        if m := _SHARD.match(name):
            shards.setdefault((m["stem"], int(m["n"])), set()).add(int(m["i"]))
    for (stem, total), have in shards.items():
        if len(have) < total:
            return Verdict("defer", "incomplete", f"{stem}: {len(have)} of {total} shards")
    return ACCEPT


def evaluate(snap: RepoSnapshot, f: Filters, *, has_token: bool) -> Verdict:
    """Apply the source's filters; cheap checks first."""
    if snap.refusal is not None:  # the source could not vouch for what it found
        return _skip(snap.refusal, snap.refusal_detail)
    final = snap.detailed
    if f.include and _matches(snap.repo_id, f.include) is None:
        return _skip("not_included", f"name matches none of {f.include}")
    if pattern := _matches(snap.repo_id, f.exclude):
        return _skip("excluded", f"name matches {pattern!r}")
    if f.skip_quantized and is_quantized(snap):
        return _skip("quantized", "quantised weights (tags or quantization_config)")
    known = snap.pipeline_tag is not None or final
    if f.pipeline_tags and known and snap.pipeline_tag not in f.pipeline_tags:
        return _skip("pipeline_tag", f"pipeline tag {snap.pipeline_tag} not in {f.pipeline_tags}")
    libraries = {lib.lower() for lib in f.libraries}
    known = snap.library is not None or final
    if libraries and known and (snap.library or "").lower() not in libraries:
        return _skip("library", f"library {snap.library} not in {f.libraries}")
    if f.licenses:
        lic = license_of(snap)
        if (lic is not None or final) and lic not in {x.lower() for x in f.licenses}:
            return _skip("license", f"license {lic} not in {f.licenses}")
    if f.skip_private and snap.private:
        return _skip("private", "private repo (visible through this source's token only)")
    if snap.gated and not has_token:
        return _skip("gated", "gated repo and no token configured for this source")
    if f.skip_remote_code and snap.requires_remote_code:
        return _skip("remote_code", "needs trust_remote_code")
    if final and snap.files is not None:
        weights = weights_verdict(snap.files)  # before params: no safetensors, no count
        if not weights.accepted:
            return weights
    if f.max_params is not None:
        if snap.num_parameters is not None and snap.num_parameters > f.max_params:
            return _skip("too_large", f"{snap.num_parameters:,} parameters > {f.max_params:,}")
        if snap.num_parameters is None and final:
            return Verdict("defer", "params_unknown", "no safetensors parameter count yet")
    return ACCEPT
