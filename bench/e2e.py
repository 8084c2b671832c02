"""Benchmark: ``uptake demo`` end to end — adoption latency per release and its stages.

    .venv/bin/python bench/e2e.py [--small] [--home DIR] [--out bench/results/e2e.json]
    .venv/bin/python bench/e2e.py --result DIR/demo-result.json   # report a finished run

Runs the demo as a newcomer does (``uptake demo`` in a subprocess: embedded broker, MLflow,
watcher, worker, promoter and serving, two tiny releases) and reads its result file, whose
numbers come from MLflow's timeline tags (uptake/mlflow_contract.py): release created ->
detected -> each worker stage's start and end -> decided (promoted_at) -> serving swapped
(served_at). Reports per release the latency release -> serving swapped (target <= 150 s on
2 CPU cores) with its breakdown, and the whole demo's wall time (target <= 5 minutes).
Prints a rich table and writes JSON with the machine's load (it moves the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from uptake.demo.results import Adoption  # noqa: E402
from uptake.demo.run import RESULT_FILE, DemoResult  # noqa: E402
from uptake.mlflow_contract import WORKER_STAGES  # noqa: E402

RELEASE_TARGET_S = 150.0
DEMO_TARGET_S = 300.0


def segments(a: Adoption) -> list[tuple[str, float | None]]:
    """Consecutive pieces of one adoption, each from the timeline tags."""
    out: list[tuple[str, float | None]] = [
        ("detect", a.seconds("release created", "detected")),
        ("queue", a.seconds("detected", f"{WORKER_STAGES[0]} started")),
    ]
    out += [(s, a.seconds(f"{s} started", f"{s} ended")) for s in WORKER_STAGES]
    out.append(("decide", a.seconds(f"{WORKER_STAGES[-1]} ended", "decided")))
    out.append(("swap", a.seconds("decided", "serving swapped")))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--small", action="store_true", help="the CI settings (uptake demo --small)"
    )
    parser.add_argument("--home", type=Path, default=None, help="demo state dir (default: temp)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "e2e.json")
    parser.add_argument(
        "--result",
        type=Path,
        default=None,
        help="report this finished demo's demo-result.json instead of running one",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    if args.result is not None:  # e.g. the run of tests/e2e: the same demo, measured once
        result = DemoResult.model_validate_json(args.result.read_text())
        args.small, wall, exit_code = result.small, result.wall_s, 0 if result.ok else 1
    else:
        home = args.home or Path(tempfile.mkdtemp(prefix="uptake-bench-e2e-")) / "demo"
        cmd = [sys.executable, "-m", "uptake.cli", "demo", "--home", str(home)]
        if args.small:
            cmd.append("--small")
        t0 = time.monotonic()
        exit_code = subprocess.run(cmd, env={**os.environ, "COLUMNS": "160"}).returncode
        wall = time.monotonic() - t0
        result = DemoResult.model_validate_json((home / RESULT_FILE).read_text())

    console = Console()
    table = Table(title=f"uptake demo end to end ({'small' if args.small else 'default'} settings)")
    table.add_column("release")
    names = [name for name, _ in segments(result.adoptions[0])] if result.adoptions else []
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("release → serving", justify="right")
    table.add_column("decision")
    rows: list[dict[str, Any]] = []
    for a in result.adoptions:
        segs = segments(a)
        total = a.release_to_serving_s
        table.add_row(
            f"{a.repo_id} v{a.version}",
            *(f"{v:.1f}" if v is not None else "—" for _, v in segs),
            f"{total:.1f} s" if total is not None else "not served",
            a.decision or "—",
        )
        rows.append(
            {
                "release": a.repo_id,
                "version": a.version,
                "decision": a.decision,
                "release_to_serving_s": total,
                "meets_target": total is not None and total <= RELEASE_TARGET_S,
                "stages_s": dict(segs),
                "post_all_pass": a.post_all_pass,
                "base_all_pass": a.base_all_pass,
            }
        )
    table.caption = (
        f"whole demo {wall:.0f} s (target ≤ {DEMO_TARGET_S:.0f} s), stack time included; "
        f"per release target ≤ {RELEASE_TARGET_S:.0f} s"
    )
    console.print(table)
    report = {
        "benchmark": "e2e",
        "small": args.small,
        "demo_ok": result.ok,
        "demo_exit_code": exit_code,
        "reported_from": str(args.result) if args.result else None,
        "problems": result.problems,
        "demo_wall_s": wall,
        "demo_meets_target": wall <= DEMO_TARGET_S,
        "release_target_s": RELEASE_TARGET_S,
        "releases": rows,
        "champion": result.champion,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"JSON: {args.out}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
