"""On-call alerts: events from the bus become Slack, PagerDuty and webhook notifications.

rules.py turns events into alerts (severity per kind, stable dedup keys); router.py picks
channels and de-duplicates into a durable queue (state store); dispatcher.py delivers with
retries and backoff, one thread per channel, so a dead channel delays nothing else.
"""
