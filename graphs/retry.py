"""Which node failures are worth another attempt: the predicate the graphs' `RetryPolicy` uses."""

from __future__ import annotations

import json

from langchain_core.exceptions import OutputParserException
from langgraph.errors import NodeTimeoutError
from langgraph.types import default_retry_on

from agent.errors import ModelOutputError, PersonaAgentError

# Malformed model output is a ValueError, which LangGraph's default policy never retries.
MODEL_FAILURES: tuple[type[Exception], ...] = (
    ModelOutputError,
    OutputParserException,
    json.JSONDecodeError,
    TimeoutError,
    NodeTimeoutError,
)


def is_transient(error: Exception) -> bool:
    """True for timeouts, connection errors and unusable model output; False for bad input or bugs."""
    if isinstance(error, MODEL_FAILURES):
        return True
    if isinstance(error, PersonaAgentError):
        return False
    return default_retry_on(error)
