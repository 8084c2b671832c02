"""The watcher: polls model hubs and directories, decides which repos are new releases worth
adopting, and publishes ``release.detected`` through a durable outbox (docs/watcher.md)."""
