"""The demo's state dir: its config, recipe and suite, written from the legal example track.

The demo runs the code path a team would: a YAML config the services read (``UPTAKE_CONFIG``),
a recipe and a suite file. Only the sizes differ from the example track, so the whole demo
fits in minutes on two CPU cores; ``--small`` shrinks them further for CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from uptake.errors import ConfigError
from uptake.stack.process import free_port

SOURCE_NAME = "demo"
ORGANISATION = "demo-org"
TRACK_NAME = "legal"
REGISTERED_MODEL = "uptake-legal"
# What the demo pays for an hour of the machine its worker evaluates on, in USD: round figures
# near 2026 on-demand list prices (a 2-vCPU cloud VM; one H100 at a GPU cloud), so every run
# logs its cost per task and the report draws quality against cost. docs/demo.md "Cost" gives
# the sources; a team sets its own in ``worker.cpu_hour_price`` / ``worker.gpu_hour_price``.
CPU_HOUR_USD = 0.10
GPU_HOUR_USD = 3.00


def example_dir() -> Path:
    """``examples/legal`` of this checkout (the demo needs its training data and suite)."""
    path = Path(__file__).resolve().parents[2] / "examples" / "legal"
    if not (path / "train.jsonl").is_file() or not (path / "suite.jsonl").is_file():
        raise ConfigError(
            f"the demo needs examples/legal (train.jsonl, suite.jsonl) next to the uptake "
            f"package; not found at {path} (run it from a checkout: pip install -e .)"
        )
    return path


class DemoSize(BaseModel):
    """How much work one adoption is: training steps and held-out tasks per practice area."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int = Field(ge=1)
    tasks_per_area: int | None = Field(None, ge=1)  # None: the whole suite
    max_new_tokens: int | None = Field(None, ge=8)  # None: the suite's own
    release_timeout_s: float = Field(gt=0)  # one release: dropped -> decided (and served)


FULL = DemoSize(max_steps=160, release_timeout_s=600)
SMALL = DemoSize(max_steps=130, tasks_per_area=12, max_new_tokens=96, release_timeout_s=600)


class DemoPaths(BaseModel):
    model_config = ConfigDict(frozen=True)

    home: Path
    config: Path
    recipe: Path
    suite: Path
    releases: Path  # the folder the dir source watches
    staging: Path  # models are built here, then moved into ``releases`` in one rename
    reports: Path


def demo_paths(home: Path) -> DemoPaths:
    home = home.expanduser().resolve()
    return DemoPaths(
        home=home,
        config=home / "uptake-demo.yaml",
        recipe=home / "track" / "recipe.yaml",
        suite=home / "track" / "suite.jsonl",
        releases=home / "releases",
        staging=home / "staging",
        reports=home / "reports",
    )


def _write_recipe(example: Path, target: Path, size: DemoSize) -> None:
    """The example recipe with an absolute data path and the demo's step budget on CPU."""
    recipe = yaml.safe_load((example / "recipe.yaml").read_text(encoding="utf-8"))
    recipe["name"] = "legal-memos-demo"
    recipe["stages"]["sft"]["data"] = str(example / "train.jsonl")
    cpu = recipe.setdefault("profiles", {}).setdefault("cpu", {})
    cpu.setdefault("stages", {}).setdefault("sft", {})["max_steps"] = size.max_steps
    target.write_text(
        "# Written by `uptake demo` from examples/legal/recipe.yaml (demo step budget).\n"
        + yaml.safe_dump(recipe, sort_keys=False),
        encoding="utf-8",
    )


def _write_suite(example: Path, target: Path, size: DemoSize) -> None:
    """The example suite, or its first ``tasks_per_area`` tasks of each practice area."""
    lines = (example / "suite.jsonl").read_text(encoding="utf-8").splitlines()
    out: list[str] = []
    per_area: dict[str, int] = {}
    for line in lines:
        if not line.strip():
            continue
        row = json.loads(line)
        if "suite" in row:  # the header line
            if size.max_new_tokens is not None:
                row["suite"]["max_new_tokens"] = size.max_new_tokens
            out.append(json.dumps(row))
            continue
        area = row["practice_area"]
        per_area[area] = per_area.get(area, 0) + 1
        if size.tasks_per_area is None or per_area[area] <= size.tasks_per_area:
            out.append(json.dumps(row))
    target.write_text("\n".join(out) + "\n", encoding="utf-8")


def write_demo_config(paths: DemoPaths, size: DemoSize) -> Path:
    """Write config, recipe and suite under the demo home (free ports each run); return the
    config file."""
    example = example_dir()
    for folder in (paths.home, paths.recipe.parent, paths.releases, paths.staging, paths.reports):
        folder.mkdir(parents=True, exist_ok=True)
    _write_recipe(example, paths.recipe, size)
    _write_suite(example, paths.suite, size)
    config = {
        "home": str(paths.home),
        "kafka": {"embedded_port": free_port(), "partitions": 1},
        "mlflow": {"port": free_port(), "registered_model": REGISTERED_MODEL},
        "sources": [
            {
                "name": SOURCE_NAME,
                "kind": "dir",
                "path": str(paths.releases),
                "interval_s": 2,
                "settle_s": 60,
            }
        ],
        "tracks": [
            {
                "name": TRACK_NAME,
                "registered_model": REGISTERED_MODEL,
                "recipe": str(paths.recipe),
                "suite": str(paths.suite),
                "sources": [SOURCE_NAME],
            }
        ],
        # the demo's models are a few MB: a 1 GB floor, not the 10 GB a 7B release needs
        "worker": {
            "cpu_hour_price": CPU_HOUR_USD,
            "gpu_hour_price": GPU_HOUR_USD,
            "min_free_gb": 1.0,
        },
        "registry": {"gate": {"mode": "auto"}, "reconcile_interval_s": 10},
        "serving": {"port": free_port()},  # not the default 8000: never collide with `up`
    }
    paths.config.write_text(
        "# Written by `uptake demo`: a dir source, the legal track, the gate in auto mode,\n"
        '# the worker\'s hour prices (docs/demo.md "Cost") and a 1 GB free-space floor.\n'
        + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )
    return paths.config
