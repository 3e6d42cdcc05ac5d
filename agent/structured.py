"""One structured model call: the parsed answer and the raw message, with declared retries.

`StructuredCaller` asks a chat model for a pydantic schema through the model's own
``with_structured_output``, keeps the raw message (its token log-probabilities give the judge
calibrated odds), retries output that fails to parse or validate, and charges every attempt to a
call budget. The judge (`agent.judge`) and persona induction (`agent.fit_stages`) use it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableConfig,
    RunnableLambda,
    RunnableSequence,
)
from pydantic import BaseModel, ValidationError

from agent.errors import ModelOutputError
from agent.usage import CallBudget, stage_config

RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    ValidationError,
    OutputParserException,
    json.JSONDecodeError,
    ModelOutputError,
)

SchemaT = TypeVar("SchemaT", bound=BaseModel)
Asker = Callable[[list[BaseMessage], RunnableConfig], Awaitable[dict[str, Any]]]


def _require_parsed(output: Mapping[str, Any]) -> dict[str, Any]:
    """Raise the parsing error of an ``include_raw=True`` structured output, if any."""
    error = output.get("parsing_error")
    if isinstance(error, RETRYABLE_ERRORS):
        raise error
    if error is not None:
        raise OutputParserException(f"unusable structured output: {error}") from error
    if output.get("parsed") is None:
        raise OutputParserException("the model returned no structured output")
    return dict(output)


class _LoopLocalSemaphore:
    """A semaphore recreated per event loop, so one judge can serve several `asyncio.run` calls."""

    def __init__(self, permits: int) -> None:
        self.permits = permits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None

    def get(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:
            self._loop, self._semaphore = loop, asyncio.Semaphore(self.permits)
        return self._semaphore


def split_structured_output(
    structured: Runnable[Any, Any],
) -> tuple[Runnable[Any, Any], Runnable[Any, Any]] | None:
    """Split a ``with_structured_output`` runnable into its model step and its parsing steps.

    langchain-core has no public call for this. Written against langchain-core 1.8.3 (with
    langchain-openai 1.7.4 and the embedded model), where ``with_structured_output`` without
    ``include_raw`` returns ``RunnableSequence(model.bind(...), parser...)``; the first step is a
    `RunnableBinding` around the chat model. Return None for any other shape, or for a parsing
    step that only runs async (the parsing steps are run synchronously): the caller then uses
    the public ``include_raw=True`` form instead, so a changed shape costs speed, not results.
    """
    if not isinstance(structured, RunnableSequence):
        return None
    first = structured.first
    if not isinstance(first.bound if isinstance(first, RunnableBinding) else first, BaseChatModel):
        return None
    rest = structured.steps[1:]
    if any(isinstance(step, RunnableLambda) and not hasattr(step, "func") for step in rest):
        return None
    return first, rest[0] if len(rest) == 1 else RunnableSequence(*rest)


def _structured_asker(model: BaseChatModel, schema: type[BaseModel], method: str) -> Asker:
    """Return a call giving ``{"raw", "parsed"}`` that raises (retryably) on unusable output.

    It runs the two steps of the model's ``with_structured_output`` itself and keeps the raw
    message: ``include_raw=True`` would wrap them in a map, an assign and a fallback (several
    runs and thread-pool hops a call) only to hand back the parsing error this raises anyway.
    """
    split = split_structured_output(model.with_structured_output(schema, method=method))
    if split is None:
        structured: Runnable[Any, Any] = model.with_structured_output(schema, method=method, include_raw=True)

        async def ask_with_raw(messages: list[BaseMessage], config: RunnableConfig) -> dict[str, Any]:
            return _require_parsed(await structured.ainvoke(messages, config))

        return ask_with_raw
    bound, parser = split

    async def ask(messages: list[BaseMessage], config: RunnableConfig) -> dict[str, Any]:
        raw = await bound.ainvoke(messages, config)
        try:
            # Parsed on the event loop: the async parsers of langchain-core hand this
            # microseconds-long CPU work to a thread pool, two hops per call.
            parsed = parser.invoke(raw, config)
        except Exception as exc:  # as include_raw=True reports it: any parsing failure
            return _require_parsed({"raw": raw, "parsed": None, "parsing_error": exc})
        return _require_parsed({"raw": raw, "parsed": parsed, "parsing_error": None})

    return ask


class StructuredCaller(Generic[SchemaT]):
    """One structured model call with declared retries, concurrency, budget and usage stage.

    Output that fails to parse or validate is retried up to `attempts` times in all; after that
    a `ModelOutputError` is raised. Each attempt is charged to `budget` when one is given.
    """

    def __init__(
        self,
        model: BaseChatModel,
        schema: type[SchemaT],
        *,
        structured_method: str = "json_schema",
        attempts: int = 3,
        stage: str = "judge",
        callbacks: Sequence[BaseCallbackHandler] = (),
        budget: CallBudget | None = None,
        limiter: asyncio.Semaphore | None = None,
        concurrency: int = 1,
    ) -> None:
        self.schema = schema
        self.stage = stage
        self.attempts = attempts
        self._callbacks = list(callbacks)
        self._shared_limiter = limiter
        self._own_limiter = _LoopLocalSemaphore(concurrency)
        self._ask = _structured_asker(model, schema, structured_method)
        self._budget = budget

    async def __call__(self, messages: list[BaseMessage]) -> tuple[SchemaT, AIMessage]:
        """Return the parsed answer and the raw model message."""
        limiter = self._shared_limiter or self._own_limiter.get()
        async with limiter:
            output = await self._retried(messages)
        parsed = output["parsed"]
        if not isinstance(parsed, self.schema):
            parsed = self.schema.model_validate(parsed)
        raw = output.get("raw")
        return parsed, raw if isinstance(raw, AIMessage) else AIMessage(content="")

    async def _retried(self, messages: list[BaseMessage]) -> dict[str, Any]:
        """Ask up to `attempts` times while the answer is unusable.

        A plain loop rather than a ``with_retry`` runnable, which would add two runnable runs to
        every call. Each attempt's model run is still traced, with the stage in its metadata.
        """
        config = stage_config(self.stage, self._callbacks)
        error: Exception | None = None
        for _ in range(self.attempts):
            if self._budget is not None:
                self._budget.charge()
            try:
                return await self._ask(messages, config)
            except IndexError:  # langchain-core's answer to a response with no choices
                error = ModelOutputError(f"{self.stage}: the model returned no choices")
            except RETRYABLE_ERRORS as exc:
                error = exc
        raise ModelOutputError(
            f"{self.stage}: no usable {self.schema.__name__} after {self.attempts} attempts ({error})"
        ) from error
