"""``GET /healthz``, ``/readyz`` and ``/metrics``: open to probes and scrapers."""
