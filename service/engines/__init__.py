"""Serving engines: the Engine protocol, the in-process ``local`` engine and the ``vllm`` client."""

from .base import (
    BASE_ADAPTER,
    AdapterRef,
    Choice,
    Engine,
    EngineHealth,
    EngineStats,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    StreamDelta,
    TokenLogprob,
)
from .errors import (
    AdapterRejected,
    EngineAuthFailed,
    EngineClosed,
    EngineError,
    EngineUnavailable,
    InvalidGenerationRequest,
)

__all__ = [
    "BASE_ADAPTER", "AdapterRef", "Choice", "Engine", "EngineHealth", "EngineStats", "GenerationRequest",
    "GenerationResult", "SamplingParams", "StreamDelta", "TokenLogprob", "AdapterRejected", "EngineAuthFailed", "EngineClosed",
    "EngineError", "EngineUnavailable", "InvalidGenerationRequest",
]
