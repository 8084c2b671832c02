"""Pipeline worker: every detected release becomes a trained, evaluated, registered candidate.

The job engine (docs/worker.md):

- ``job_spec.JobSpec`` / ``spec_for(settings, release, track, worker=...)`` — one job's input,
  picklable for the spawned child; ``job_key(spec)`` — (release id, track, recipe sha,
  suite sha), the idempotency key;
- ``job.run_job(spec) -> JobOutcome`` — runs the stages inside the child ``LongJob`` starts;
  raises ``failures.JobFailed`` (retryable or permanent by class, with its ``stage``) or
  ``lease.JobLeaseLost``;
- ``job_events.failure_event(spec, stage, reason, retryable=...)`` — the ``run.failed`` a service
  publishes for a child that died without reporting;
- ``stages`` — one function per stage, each returning a small typed result;
  ``mlflow_front.WorkerMlflow`` — the typed MLflow front the job talks through;
- ``register.register_candidate`` — idempotent registration (the registry's tests use it).

The Kafka service around it (consumer group, fan-out to tracks, CLI, status) is in
``service.py``, ``cli.py``, ``status.py`` and ``progress_board.py``. Heavy libraries are
imported inside functions, so importing this package stays fast.
"""
