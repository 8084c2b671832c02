"""The vLLM engine: each loaded version is a supervised vLLM server behind a proxy."""

from serving.vllm.config import VllmConfig
from serving.vllm.engine import VersionClosed, VllmEngine, VllmVersion
from serving.vllm.protocol import UpstreamError, UpstreamInputError
from serving.vllm.server import VllmStartError

__all__ = [
    "UpstreamError",
    "UpstreamInputError",
    "VersionClosed",
    "VllmConfig",
    "VllmEngine",
    "VllmStartError",
    "VllmVersion",
]
