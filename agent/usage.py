"""Accounting of LLM calls: calls and prompt/completion tokens per stage, and a call budget.

`UsageTracker` is a LangChain callback handler. Pass it in a run's ``callbacks`` and name the
stage in the run's ``metadata={"stage": ...}``; it counts every chat-model call under that stage.
Token figures come from the message's ``usage_metadata`` when the model reports it, otherwise
from `count_tokens_approximately` (no tokenizer download).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, ConfigDict

from agent.errors import BudgetExceeded

DEFAULT_STAGE = "other"


class StageUsage(BaseModel):
    """Calls and tokens spent in one stage."""

    model_config = ConfigDict(frozen=True)

    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: StageUsage) -> StageUsage:
        return StageUsage(
            calls=self.calls + other.calls,
            failed_calls=self.failed_calls + other.failed_calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class UsageReport(BaseModel):
    """Usage by stage, in the order stages were first seen, with the total."""

    model_config = ConfigDict(frozen=True)

    stages: dict[str, StageUsage] = {}

    @property
    def total(self) -> StageUsage:
        """Sum over all stages."""
        total = StageUsage()
        for usage in self.stages.values():
            total = total + usage
        return total


class UsageTracker(BaseCallbackHandler):
    """Count chat-model calls and tokens per stage (the run metadata key ``stage``)."""

    run_inline = True  # keep counts exact and ordered under asyncio

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[UUID, tuple[str, int]] = {}
        self._stages: dict[str, StageUsage] = {}

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the stage and the prompt size of a starting call."""
        stage = str((metadata or {}).get("stage", DEFAULT_STAGE))
        estimate = sum(count_tokens_approximately(batch) for batch in messages)
        with self._lock:
            self._pending[run_id] = (stage, estimate)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Add a finished call with its token counts."""
        with self._lock:
            stage, estimate = self._pending.pop(run_id, (DEFAULT_STAGE, 0))
        prompt, completion = estimate, 0
        for generation in (item for batch in response.generations for item in batch):
            if not isinstance(generation, ChatGeneration):
                completion += count_tokens_approximately([generation.text])
                continue
            usage = getattr(generation.message, "usage_metadata", None)
            if usage:
                prompt = int(usage.get("input_tokens", prompt))
                completion += int(usage.get("output_tokens", 0))
            else:
                completion += count_tokens_approximately([generation.message])
        self._add(stage, StageUsage(calls=1, prompt_tokens=prompt, completion_tokens=completion))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Add a failed call; its prompt was still sent."""
        with self._lock:
            stage, estimate = self._pending.pop(run_id, (DEFAULT_STAGE, 0))
        self._add(stage, StageUsage(calls=1, failed_calls=1, prompt_tokens=estimate))

    def _add(self, stage: str, usage: StageUsage) -> None:
        with self._lock:
            self._stages[stage] = self._stages.get(stage, StageUsage()) + usage

    def report(self) -> UsageReport:
        """Return the usage counted so far."""
        with self._lock:
            return UsageReport(stages=dict(self._stages))


class CallBudget:
    """A cap on model calls; `charge` raises `BudgetExceeded` once the cap is spent."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a call budget needs a limit of at least 1")
        self.limit = limit
        self.spent = 0

    @property
    def left(self) -> int:
        """Calls still allowed."""
        return self.limit - self.spent

    def charge(self, calls: int = 1) -> None:
        """Spend `calls` calls, or raise `BudgetExceeded` if that would pass the cap."""
        if self.spent + calls > self.limit:
            raise BudgetExceeded(f"the budget of {self.limit} LLM calls is spent")
        self.spent += calls


def stage_config(
    stage: str, callbacks: Sequence[BaseCallbackHandler] = (), run_name: str | None = None
) -> RunnableConfig:
    """Build a run config that tags every call with `stage` and reports to `callbacks`."""
    config = RunnableConfig(metadata={"stage": stage}, callbacks=list(callbacks))
    if run_name:
        config["run_name"] = run_name
    return config
