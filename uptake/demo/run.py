"""``uptake demo`` end to end: state dir, stack, two releases, the live view, the summary.

The main thread runs the stack exactly as ``uptake up`` does (start, then ``supervise`` until
interrupted, then ``stop``), so restarts, the watchdog and the clean stop are the same code. The
demo's own work (dropping the releases, following them, asking serving, the report and the
summary) runs on a second thread that interrupts the main one when it is done, unless
``--keep`` asks to leave the stack up for exploring.
"""

from __future__ import annotations

import _thread
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import BaseModel
from rich.console import Console
from rich.live import Live

from uptake.demo.ask import Answer, api_root, ask, sample_question, wait_for_version
from uptake.demo.config import (
    FULL,
    ORGANISATION,
    REGISTERED_MODEL,
    SMALL,
    SOURCE_NAME,
    DemoPaths,
    DemoSize,
    demo_paths,
    example_dir,
    write_demo_config,
)
from uptake.demo.follow import BusFollower
from uptake.demo.live_view import Row, render
from uptake.demo.releases import RELEASES, build, publish
from uptake.demo.results import Adoption, DemoMlflow
from uptake.demo.summary import adoption_table, area_table, markdown
from uptake.errors import DependencyError, InputError, UptakeError
from uptake.formatting import MISSING
from uptake.service_runtime import on_stop_signals
from uptake.settings import Settings, load_settings
from uptake.stack.local import LocalStack, read_stack_info

log = logging.getLogger(__name__)

RESULT_FILE = "demo-result.json"
SUMMARY_FILE = "demo-summary.md"
DONE_STATES = ("promoted", "rejected", "failed", "pending approval")
WATCHER_READY_TIMEOUT_S = 60.0
REPORT_TIMEOUT_S = 180.0


class ReleaseOutcome(BaseModel):
    repo_id: str
    description: str
    released_at: datetime | None = None
    detected: bool = False
    release_id: str | None = None
    version: str | None = None
    status: str = "waiting"
    reason: str | None = None
    served_version_seen: bool = False  # serving answered with this version after its promotion


class DemoResult(BaseModel):
    """What the demo did, written to ``<home>/demo-result.json`` (tests and the bench read it)."""

    ok: bool = False
    problems: list[str] = []
    small: bool
    home: str
    config: str
    tracking_uri: str = ""
    serving_url: str | None = None
    releases: list[ReleaseOutcome] = []
    adoptions: list[Adoption] = []
    champion: str | None = None
    answer: Answer | None = None
    report_dir: str | None = None
    report_files: list[str] = []
    started_at: datetime
    wall_s: float = 0.0


def prepare_home(home: Path) -> DemoPaths:
    """A fresh demo home: an earlier demo's state is removed, anything else is refused."""
    paths = demo_paths(home)
    if paths.home.exists() and any(paths.home.iterdir()):
        if not paths.config.is_file():
            raise InputError(f"{paths.home} is not empty and not a demo home; pick another --home")
        settings = load_settings(paths.config)
        info = read_stack_info(settings)
        if info is not None:
            raise DependencyError(
                f"a demo is still running on {paths.home} (pid {info.pid}); stop it first"
            )
        shutil.rmtree(paths.home)
    return paths


class Flow:
    """The demo's own work, on its own thread while the main thread supervises the stack."""

    def __init__(
        self,
        stack: LocalStack,
        settings: Settings,
        paths: DemoPaths,
        size: DemoSize,
        builds: list[Future[Path]],
        console: Console,
        result: DemoResult,
    ) -> None:
        self.stack, self.settings, self.paths, self.size = stack, settings, paths, size
        self.builds, self.console, self.result = builds, console, result
        self.stop = threading.Event()
        self.done = threading.Event()
        self.rows = [Row(r, f"{ORGANISATION}/{r.name}") for r in RELEASES]
        self.started = time.monotonic()
        self.banner = ""

    def address(self, name: str) -> str | None:
        return next((p.address for p in self.stack.processes if p.name == name), None)

    def run(self, keep: bool) -> None:
        try:
            self._run()
        except Exception as exc:  # shown, recorded, and the stack still stops cleanly
            log.exception("demo flow failed")
            self.result.problems.append(f"demo stopped early: {type(exc).__name__}: {exc}")
        finally:
            self.result.ok = not self.result.problems
            self.result.wall_s = time.monotonic() - self.started
            (self.paths.home / RESULT_FILE).write_text(self.result.model_dump_json(indent=2))
            self.done.set()
            if keep and not self.stop.is_set():
                self.console.print(
                    "[bold]--keep: the stack keeps running.[/bold] Ctrl-C stops everything."
                )
            elif not self.stop.is_set():
                _thread.interrupt_main()  # the main thread stops the stack

    def _run(self) -> None:
        r = self.result
        r.tracking_uri = self.stack.tracking_uri
        serving = self.address("serving")
        r.serving_url = api_root(serving) if serving else None
        if r.serving_url is None:
            r.problems.append("the stack has no serving service (uptake/services.py SERVICES)")
        self._wait_watcher_ready()
        follower = BusFollower(self.settings, self.stack.bootstrap, REGISTERED_MODEL).start()
        mlflow = DemoMlflow(self.stack.tracking_uri, REGISTERED_MODEL)
        try:
            with Live(console=self.console, refresh_per_second=4, transient=False) as live:
                for i, row in enumerate(self.rows):
                    if self.stop.is_set():
                        return
                    self._adopt(i, row, follower, mlflow, live)
                self._refresh(live, follower, "both releases handled")
            self.console.print()
        finally:
            follower.stop()
        self._finish(mlflow)

    def _refresh(self, live: Live, follower: BusFollower, banner: str | None = None) -> None:
        if banner is not None:
            self.banner = banner
        live.update(render(self.rows, follower.snapshot(), self.started, self.banner))

    def _wait_watcher_ready(self) -> None:
        """The first poll of a dir source records what is there as the baseline: release only
        after it, or the demo's release would count as already known."""
        url = self.address("watcher")
        deadline = time.monotonic() + WATCHER_READY_TIMEOUT_S
        while url and time.monotonic() < deadline and not self.stop.is_set():
            try:
                body = httpx.get(f"{url}/healthz", timeout=2).json()
                if body["sources"][SOURCE_NAME]["initialized"]:
                    return
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                pass
            time.sleep(0.5)
        raise DependencyError(f"the watcher did not finish its first poll ({url})")

    def _adopt(
        self, i: int, row: Row, follower: BusFollower, mlflow: DemoMlflow, live: Live
    ) -> None:
        outcome = ReleaseOutcome(repo_id=row.repo_id, description=row.release.description)
        self.result.releases.append(outcome)
        self._refresh(live, follower, f"building {row.repo_id}…")
        built = self.builds[i].result()
        publish(built, self.paths.releases, ORGANISATION)
        row.released_at = time.monotonic()
        outcome.released_at = datetime.now(UTC)
        self._refresh(live, follower, f"released {row.repo_id} into {self.paths.releases}")
        deadline = row.released_at + self.size.release_timeout_s
        next_mlflow = 0.0
        while not self.stop.is_set():
            p = follower.snapshot().by_repo(row.repo_id)
            if p is not None:
                outcome.detected, outcome.release_id = True, p.release_id
                outcome.version, outcome.status, outcome.reason = p.version, p.status, p.reason
            if outcome.status not in DONE_STATES and time.monotonic() >= next_mlflow:
                next_mlflow = time.monotonic() + 5  # the truth, if an event went astray
                self._from_mlflow(outcome, mlflow)
            if outcome.status in DONE_STATES:
                break
            if time.monotonic() > deadline:
                self.result.problems.append(
                    f"{row.repo_id}: not decided within {self.size.release_timeout_s:.0f} s "
                    f"(last: {outcome.status}); see {self.stack.logs}"
                )
                return
            self._refresh(live, follower)
            time.sleep(0.25)
        if outcome.status == "failed":
            self.result.problems.append(f"{row.repo_id}: run failed: {outcome.reason}")
        if outcome.status != "promoted" or outcome.version is None or not self.result.serving_url:
            self._refresh(live, follower)
            return
        row.note = f"promoted v{outcome.version}; waiting for serving to swap"
        self._refresh(live, follower)
        left = max(5.0, deadline - time.monotonic())
        answer = self._wait_served(outcome.version, left, live, follower)
        if answer is None:
            self.result.problems.append(
                f"{row.repo_id}: serving did not answer with v{outcome.version} within {left:.0f} s"
            )
            row.note = "serving did not swap"
        else:
            outcome.served_version_seen, row.serving, row.note = True, True, None
        self._refresh(live, follower)

    def _from_mlflow(self, outcome: ReleaseOutcome, mlflow: DemoMlflow) -> None:
        for a in mlflow.adoptions():
            if a.repo_id == outcome.repo_id and a.decision in ("promoted", "rejected"):
                outcome.detected = True
                outcome.release_id, outcome.version, outcome.status = (
                    a.release_id,
                    a.version,
                    a.decision,
                )
                outcome.reason = a.reason

    def _wait_served(
        self, version: str, timeout_s: float, live: Live, follower: BusFollower
    ) -> Answer | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stop.is_set():
            answer = wait_for_version(
                str(self.result.serving_url), REGISTERED_MODEL, version, 2.0, self.stop
            )
            if answer is not None:
                return answer
            self._refresh(live, follower)
        return None

    def _finish(self, mlflow: DemoMlflow) -> None:
        r, console = self.result, self.console
        if r.serving_url:
            question = sample_question(self.paths.suite)
            try:
                r.answer = ask(r.serving_url, REGISTERED_MODEL, question)
            except httpx.HTTPError as exc:
                r.problems.append(f"serving did not answer: {exc}")
        self._report()
        time.sleep(1.0)  # serving tags the version it first answered with (served_at)
        r.adoptions = mlflow.adoptions()
        r.champion = mlflow.champion()
        if r.answer is not None and r.champion and r.answer.version != r.champion:
            r.problems.append(
                f"serving answered with v{r.answer.version}, the champion alias is v{r.champion}"
            )
        (self.paths.home / SUMMARY_FILE).write_text(markdown(r.adoptions, r.champion))
        console.print()
        console.print(adoption_table(r.adoptions, r.champion))
        console.print(area_table(r.adoptions))
        if r.answer is not None:
            console.print(
                f"\n[bold]Asked serving:[/bold] {r.answer.question}\n"
                f"[bold]Answer[/bold] (x-uptake-model-version: {r.answer.header}):\n"
                f"{r.answer.text.strip()}\n",
                markup=True,
                highlight=False,
            )
        self._where_to_look()
        for problem in r.problems:
            console.print(f"[red]problem:[/red] {problem}", highlight=False)

    def _report(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "uptake.cli",
            "report",
            "--all",
            "--model",
            REGISTERED_MODEL,
            "--out",
            str(self.paths.reports),
            "--config",
            str(self.paths.config),
        ]
        env = {
            **os.environ,
            "UPTAKE_MLFLOW_TRACKING_URI": self.stack.tracking_uri,
            "UPTAKE_KAFKA_BOOTSTRAP": self.stack.bootstrap,
            "UPTAKE_HOME": str(self.paths.home),
        }
        try:
            done = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=REPORT_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            self.result.problems.append(f"uptake report took over {REPORT_TIMEOUT_S:.0f} s")
            return
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            self.result.problems.append(f"uptake report failed: {tail[0]}")
            return
        self.result.report_dir = str(self.paths.reports)
        self.result.report_files = sorted(
            str(p) for p in self.paths.reports.rglob("*") if p.suffix in (".html", ".md")
        )

    def _where_to_look(self) -> None:
        r, c = self.result, self.console
        ui = r.tracking_uri
        c.print("[bold]Where to look[/bold]")
        c.print(f"  MLflow UI      {ui}  (runs: {ui}/#/experiments)")
        c.print(f"  registry       {ui}/#/models/{REGISTERED_MODEL}  (aliases: champion)")
        if r.champion:
            c.print(f"  champion       {ui}/#/models/{REGISTERED_MODEL}/versions/{r.champion}")
        index = Path(r.report_dir or self.paths.reports) / "index.html"
        c.print(f"  report         {index if index.exists() else r.report_dir or MISSING}")
        for f in r.report_files:
            if Path(f) != index:  # the line above names it
                c.print(f"                 {f}")
        c.print(f"  summary        {self.paths.home / SUMMARY_FILE}")
        if r.serving_url:
            body = json.dumps(
                {
                    "model": REGISTERED_MODEL,
                    "messages": [{"role": "user", "content": "Client memo needed. ..."}],
                }
            )
            c.print(f"  serving        {r.serving_url}/v1/chat/completions")
            c.print(
                f"  try            curl -i {r.serving_url}/v1/chat/completions "
                f"-H 'content-type: application/json' -d '{body}'",
                soft_wrap=True,
                highlight=False,
            )
        c.print(f"  logs           {self.stack.logs}")
        c.print(
            f"  browse later   uptake up --config {self.paths.config}  "
            "(or run the demo with --keep)"
        )


def run_demo(home: Path, *, keep: bool, small: bool, console: Console) -> DemoResult:
    """Run the whole demo; the stack is stopped before this returns (after Ctrl-C with
    ``keep``)."""
    size = SMALL if small else FULL
    paths = prepare_home(home)
    config = write_demo_config(paths, size)
    settings = load_settings(config)
    example = example_dir()
    result = DemoResult(
        small=small, home=str(paths.home), config=str(config), started_at=datetime.now(UTC)
    )
    stack = LocalStack(settings, config)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-build")
    builds = [pool.submit(build, r, paths.staging, example / "train.jsonl") for r in RELEASES]
    flow = Flow(stack, settings, paths, size, builds, console, result)

    def interrupted() -> None:
        raise KeyboardInterrupt

    on_stop_signals(interrupted)
    thread: threading.Thread | None = None
    try:
        with console.status(
            "starting the stack (broker, MLflow, watcher, worker, promoter, serving)…"
        ):
            stack.start()
        console.print(
            f"stack up: MLflow {stack.tracking_uri}, Kafka {stack.bootstrap}, home {paths.home}",
            highlight=False,
        )
        thread = threading.Thread(target=flow.run, args=(keep,), name="demo-flow", daemon=True)
        thread.start()
        stack.supervise(
            say=lambda line: console.print(line, style="yellow", markup=False, soft_wrap=True)
        )
        result.problems.append("every component of the stack was given up")
    except KeyboardInterrupt:
        if not flow.done.is_set():
            result.problems.append("interrupted")
    except UptakeError as exc:  # the stack did not come up: said in one line, recorded
        result.problems.append(str(exc))
    finally:
        flow.stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        with console.status("stopping the stack…"):
            stack.stop()
        if thread is not None:
            thread.join(timeout=30)
    result.ok = not result.problems
    (paths.home / RESULT_FILE).write_text(result.model_dump_json(indent=2))
    if thread is None:  # the flow never ran: its problems were not printed
        for problem in result.problems:
            console.print(f"[red]problem:[/red] {problem}", highlight=False)
    console.print("stack stopped" + ("" if result.ok else " (with problems, see above)"))
    return result
