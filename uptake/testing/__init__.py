"""Builders for tests, benchmarks and ``uptake demo``: not part of the service contracts."""
