"""Group consumer with manual commits, bounded retries, DLQ routing and long-job support.

Delivery is at-least-once: an offset is committed only after the handler's effect is durable
(or the message is safely in the DLQ). A message that cannot be decoded, or whose handler
keeps failing, goes to the DLQ with its origin and the error, and the consumer moves on.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError

from uptake.bus.jobs import ChildJob, LongJob
from uptake.bus.producer import EventProducer
from uptake.events import DeadLetter, Event, EventDecodeError, decode_event
from uptake.settings import Settings

log = logging.getLogger(__name__)

Handled = LongJob | None
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


class _Interrupted(Exception):
    """Shutdown was requested while a message was in flight: leave it uncommitted."""


class _DeadLetterFailed(Exception):
    """The DLQ write failed: the message stays uncommitted and is handled again later."""


class _PauseNewAssignments(ConsumerRebalanceListener):
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

    The handler returns None when it is done, or a ``LongJob`` to run in a child process;
    then the consumer pauses its partitions and keeps polling (so it stays in the group)
    until the job ends, and commits only afterwards.
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
    ) -> None:
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
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

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
        attempts = self.settings.kafka.max_retries + 1
        kind, reason = "handler_error", ""
        for attempt in range(1, attempts + 1):
            try:
                outcome = self.handler(event, record)
                if outcome is None:
                    return None
                self.stats.long_jobs += 1
                job_error = self._run_long_job(outcome)
                if job_error is None:
                    return None
                kind, reason = "job_failed", job_error
            except _Interrupted:
                raise
            except Exception as exc:  # handler bug or transient failure: retry, then DLQ
                kind, reason = "handler_error", f"{type(exc).__name__}: {exc}"
            log.warning(
                "handling %s (attempt %d/%d) failed: %s", event.type, attempt, attempts, reason
            )
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

    def _run_long_job(self, job: LongJob) -> str | None:
        """Run ``job`` in a child while polling with paused partitions; return its error."""
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
        return child.error

    def _poll_while_paused(self) -> None:
        """Keep the group membership alive; anything fetched anyway is rewound, not lost."""
        stray = self.kafka.poll(timeout_ms=self.settings.kafka.poll_timeout_ms)
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
        value = record.value
        payload = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else ""
        key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
        letter = DeadLetter(
            producer=self.group_id,
            origin_topic=record.topic,
            origin_partition=record.partition,
            origin_offset=record.offset,
            origin_key=key,
            consumer_group=self.group_id,
            error_kind=kind,
            error=reason,
            attempts=attempts,
            payload=payload,
        )
        try:
            self.producer.publish(letter)  # blocks until acknowledged: only then do we commit
        except Exception as exc:  # broker down, DLQ misconfigured, timeout
            raise _DeadLetterFailed(f"{type(exc).__name__}: {exc}") from exc
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
