"""Group consumer with manual commits, bounded retries, DLQ routing and long-job support.

Delivery is at-least-once: an offset is committed only after the handler's effect is durable
(or the message is safely in the DLQ). A message that cannot be decoded, or whose handler
keeps failing, goes to the DLQ with its origin and the error, and the consumer moves on.
No message ends the loop: a decode failure is always an ``EventDecodeError``, a handler
failure of any kind (``Exception``) is retried, or dead-lettered at once when it says it is
permanent, and a DLQ entry is bounded so that it can always be written (``dead_letters``).

Work that outlasts ``max_poll_interval_ms`` never runs on the polling thread: a handler returns
a ``LongJob`` (a child process: training) or a ``ThreadJob`` (a worker thread: I/O-bound work
such as a promotion decision waiting on MLflow); the consumer pauses its partitions, keeps
polling so that it stays in the group, and commits only after the job's effect is done.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError

from uptake.bus.dead_letters import TOO_LARGE, dead_letter
from uptake.bus.jobs import ChildJob, JobOutcome, LongJob
from uptake.bus.producer import EventProducer
from uptake.errors import describe_exception, is_retryable
from uptake.events import Event, EventDecodeError, decode_event
from uptake.service_runtime import on_stop_signals
from uptake.settings import Settings

log = logging.getLogger(__name__)

THREAD_STOP_GRACE_S = 20.0  # within the 30 s a service gives its consumer thread to stop
PAUSED_POLL_MS = 100  # while a thread job runs: how soon its end is noticed


@dataclass(frozen=True)
class ThreadJob:
    """What a handler returns to have slow, I/O-bound work done on a worker thread.

    ``target`` runs on its own thread while the consumer keeps polling with its partitions
    paused; the offset is committed after it returns. It reports a failure by raising, like a
    handler (retried, or dead-lettered at once when permanent). A thread cannot be killed:
    bound the work itself (timeouts on its I/O). On shutdown the consumer waits up to
    ``stop_grace_s`` for it and leaves the message uncommitted (redelivered, so the work must
    be idempotent).
    """

    target: Callable[[], object]
    name: str = "job"
    stop_grace_s: float = THREAD_STOP_GRACE_S


Handled = LongJob | ThreadJob | None
Handler = Callable[[Event, ConsumerRecord], Handled]


@dataclass
class ConsumerStats:
    processed: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    retries: int = 0
    long_jobs: int = 0
    revocations: int = 0  # partitions taken away from us (rebalances that cost us work)
    dead_letter_failures: int = 0  # DLQ writes that failed: the message was kept, not lost
    payloads_omitted: int = 0  # letters the DLQ refused as too large, resent without payload


class _Interrupted(Exception):
    """Shutdown was requested while a message was in flight: leave it uncommitted."""


class _DeadLetterFailed(Exception):
    """The DLQ write failed: the message stays uncommitted and is handled again later."""


class _PauseNewAssignments(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python has no types
    def __init__(self, owner: EventConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = list(revoked)
        if revoked:
            self.owner.stats.revocations += 1
        if self.owner.job_running and revoked:
            log.warning(
                "partitions %s revoked while a job is running; its commit will fail and the "
                "new owner will see the message again (handlers are idempotent on their key)",
                sorted(revoked),
            )

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        if self.owner.job_running and assigned:
            self.owner.kafka.pause(*assigned)


class EventConsumer:
    """Consume ``topics`` as ``group_id`` and call ``handler`` for each accepted event.

    The handler returns None when it is done, or a ``LongJob`` to run in a child process or
    a ``ThreadJob`` to run on a thread; then the consumer pauses its partitions and keeps
    polling (so it stays in the group) until the job ends, and commits only afterwards.
    """

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        topics: list[str],
        handler: Handler,
        *,
        accept: Iterable[type[Event]] | None = None,
        producer: EventProducer | None = None,
        max_poll_records: int = 50,
        dead_letter_undecodable: bool = True,
        group_instance_id: str | None = None,
    ) -> None:
        """``group_instance_id``: static membership (KIP-345): a member that restarts under
        the same id takes its partitions back without a rebalance (the pipeline worker)."""
        self.settings = settings
        self.group_id = group_id
        self.topics = topics
        self.handler = handler
        self.accept = tuple(accept) if accept is not None else None
        # False for bystanders (e.g. the alerter) reading topics other groups own: the owner
        # dead-letters an undecodable message, so a bystander only logs and skips it.
        self.dead_letter_undecodable = dead_letter_undecodable
        self.stats = ConsumerStats()
        self.job_running = False
        self._stop = threading.Event()
        self._owns_producer = producer is None
        self.producer = producer or EventProducer(settings, producer_name=f"{group_id}-dlq")
        k = settings.kafka
        self.kafka = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group_id,
            group_instance_id=group_instance_id,
            client_id=f"{k.client_id}-{group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            max_poll_interval_ms=k.max_poll_interval_ms,
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            request_timeout_ms=max(k.request_timeout_ms, k.session_timeout_ms + 5_000),
        )
        self.kafka.subscribe(topics, listener=_PauseNewAssignments(self))

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish: an in-flight message stays uncommitted (redelivered later)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the loop gracefully (main thread only)."""
        on_stop_signals(self.stop)

    def close(self) -> None:
        try:
            self.kafka.close(autocommit=False)
        finally:
            if self._owns_producer:
                self.producer.close()

    def __enter__(self) -> EventConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- main loop --------------------------------------------------------------------------

    def run(
        self,
        *,
        max_messages: int | None = None,
        timeout_s: float | None = None,
        until: Callable[[], bool] | None = None,
    ) -> ConsumerStats:
        """Consume until stopped, ``max_messages`` handled, ``timeout_s`` passed or ``until()``."""
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        handled = 0
        while not self.stopping:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if until is not None and until():
                break
            batches = self.kafka.poll(timeout_ms=self.settings.kafka.poll_timeout_ms)
            for tp, records in batches.items():
                for record in records:
                    if self.stopping:
                        return self.stats
                    if tp not in self.kafka.assignment():
                        break  # revoked while we worked: the new owner handles the rest
                    try:
                        self._handle(record)
                    except _Interrupted:
                        return self.stats
                    except _DeadLetterFailed as exc:
                        self._keep_for_later(tp, record, exc)
                        break  # the rest of this partition comes again after the rewind
                    handled += 1
                    if max_messages is not None and handled >= max_messages:
                        return self.stats
        return self.stats

    def _handle(self, record: ConsumerRecord) -> None:
        try:
            event = decode_event(record.value)
        except EventDecodeError as exc:
            log.warning(
                "undecodable message %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                exc.reason,
            )
            if self.dead_letter_undecodable:
                self._dead_letter(record, exc.kind, exc.reason, attempts=1)
            else:
                self.stats.skipped += 1
            self._commit(record)
            return
        if self.accept is not None and not isinstance(event, self.accept):
            self.stats.skipped += 1
            self._commit(record)
            return
        error = self._handle_with_retries(event, record)
        if error is None:
            self.stats.processed += 1
        else:
            kind, reason, attempts = error
            self._dead_letter(record, kind, reason, attempts)
        self._commit(record)

    def _handle_with_retries(
        self, event: Event, record: ConsumerRecord
    ) -> tuple[str, str, int] | None:
        """None when handled; else (error kind, reason, attempts made) for the DLQ. A failure
        that says it is permanent (``retryable=False``, a too-large record) is not retried."""
        attempts = self.settings.kafka.max_retries + 1
        kind, reason = "handler_error", ""
        for attempt in range(1, attempts + 1):
            try:
                outcome = self.handler(event, record)
                if outcome is None:
                    return None
                self.stats.long_jobs += 1
                if isinstance(outcome, ThreadJob):
                    result = self._run_thread_job(outcome)
                else:
                    result = self._run_long_job(outcome)
                if result.ok:
                    return None
                kind, reason, retryable = "job_failed", result.message or "", result.retryable
            except _Interrupted:
                raise
            except Exception as exc:  # any failure, RecursionError and MemoryError included
                kind, reason = "handler_error", describe_exception(exc)
                retryable = is_retryable(exc) and not isinstance(exc, TOO_LARGE)
            log.warning(
                "handling %s (attempt %d/%d) failed%s: %s",
                event.type,
                attempt,
                attempts,
                "" if retryable else " permanently",
                reason,
            )
            if not retryable:
                return kind, reason, attempt
            if attempt < attempts:
                self.stats.retries += 1
                self._backoff(attempt)
        return kind, reason, attempts

    def _backoff(self, attempt: int) -> None:
        delay = self.settings.kafka.retry_backoff_s * (2 ** (attempt - 1))
        end = time.monotonic() + min(delay, self.settings.kafka.max_poll_interval_ms / 2000)
        while time.monotonic() < end:
            if self.stopping:
                raise _Interrupted()
            time.sleep(min(0.1, max(end - time.monotonic(), 0)))

    def _run_long_job(self, job: LongJob) -> JobOutcome:
        """Run ``job`` in a child while polling with paused partitions; return how it ended.
        ``ChildJob.done`` drains the child's report and enforces the job's deadline."""
        paused = list(self.kafka.assignment())
        self.job_running = True
        self.kafka.pause(*paused)
        child = ChildJob(job)
        log.info("long job %s started (pid %s)", job.name, child.pid)
        try:
            while not child.done(wait_s=0.05):
                if self.stopping:
                    child.stop()
                    raise _Interrupted()
                self._poll_while_paused()
        finally:
            self.job_running = False
            self.kafka.resume(*self.kafka.assignment())
        if child.outcome.reason == "deadline":
            log.error("long job %s: %s", job.name, child.outcome.message)
        return child.outcome

    def _run_thread_job(self, job: ThreadJob) -> JobOutcome:
        """Run ``job`` on a thread while polling with paused partitions; return how it ended."""
        failure: list[BaseException] = []

        def work() -> None:
            try:
                job.target()
            except BaseException as exc:  # reported to the retry loop, like a handler's
                failure.append(exc)

        paused = list(self.kafka.assignment())
        self.job_running = True
        self.kafka.pause(*paused)
        thread = threading.Thread(target=work, name=f"uptake-job-{job.name}", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                if self.stopping:
                    thread.join(job.stop_grace_s)  # a thread cannot be stopped: let it finish
                    raise _Interrupted()
                self._poll_while_paused(min(PAUSED_POLL_MS, self.settings.kafka.poll_timeout_ms))
        finally:
            self.job_running = False
            self.kafka.resume(*self.kafka.assignment())
        if not failure:
            return JobOutcome(ok=True)
        exc = failure[0]
        return JobOutcome(
            ok=False, reason="error", message=describe_exception(exc), retryable=is_retryable(exc)
        )

    def _poll_while_paused(self, timeout_ms: int | None = None) -> None:
        """Keep the group membership alive; anything fetched anyway is rewound, not lost."""
        stray = self.kafka.poll(timeout_ms=timeout_ms or self.settings.kafka.poll_timeout_ms)
        for tp, records in stray.items():
            if records:
                self.kafka.seek(tp, records[0].offset)
                self.kafka.pause(tp)

    # -- effects ----------------------------------------------------------------------------

    def _keep_for_later(self, tp: TopicPartition, record: ConsumerRecord, exc: Exception) -> None:
        """Rewind to ``record`` and wait a little: a message is never committed without its
        DLQ entry, and the consumer outlives a DLQ outage instead of dying with it."""
        self.stats.dead_letter_failures += 1
        log.error(
            "dead-lettering %s[%d]@%d failed (%s); it stays uncommitted and is retried",
            record.topic,
            record.partition,
            record.offset,
            exc,
        )
        if tp in self.kafka.assignment():
            self.kafka.seek(tp, record.offset)
        with contextlib.suppress(_Interrupted):  # stopping: the loop sees it next
            self._backoff(self.settings.kafka.max_retries + 1)

    def _dead_letter(self, record: ConsumerRecord, kind: str, reason: str, attempts: int) -> None:
        """Write the bounded DLQ entry; a broker that still finds it too large (a lower
        ``max.message.bytes``) gets it without the payload: too large never gets better."""
        letter = dead_letter(record, self.group_id, kind, reason, attempts)
        try:
            try:
                self.producer.publish(letter)  # blocks until acknowledged: only then commit
            except TOO_LARGE as exc:
                log.warning(
                    "DLQ refused the letter for %s@%d (%s); resending it without the payload",
                    record.topic,
                    record.offset,
                    exc,
                )
                self.stats.payloads_omitted += 1
                slim = dead_letter(
                    record, self.group_id, kind, reason, attempts, keep_payload=False
                )
                self.producer.publish(slim)
        except Exception as exc:  # broker down, DLQ misconfigured, timeout
            raise _DeadLetterFailed(describe_exception(exc)) from exc
        self.stats.dead_lettered += 1

    def _commit(self, record: ConsumerRecord) -> None:
        tp = TopicPartition(record.topic, record.partition)
        if tp not in self.kafka.assignment():
            log.warning("not committing %s@%d: partition no longer assigned", tp, record.offset)
            return
        try:
            self.kafka.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
        except (CommitFailedError, KafkaError) as exc:
            log.warning(
                "commit of %s@%d failed (%s); it may be redelivered", tp, record.offset, exc
            )
