"""The vLLM engine: each loaded version is a supervised vLLM server behind a proxy."""

from serving.vllm.config import VllmConfig
from serving.vllm.engine import VllmEngine, VllmVersion
from serving.vllm.protocol import UpstreamError, UpstreamInputError
from serving.vllm.server import VllmStartError

__all__ = [
    "UpstreamError",
    "UpstreamInputError",
    "VllmConfig",
    "VllmEngine",
    "VllmStartError",
    "VllmVersion",
]
