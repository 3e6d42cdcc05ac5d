"""The structured call splits a model's structured output into model and parser where it can."""

from __future__ import annotations

from langchain_core.runnables import RunnableBinding, RunnableLambda
from langchain_openai import ChatOpenAI

from agent.judge import JudgeAnswer
from agent.structured import split_structured_output
from tests.fakes import MalformedChatModel, default_responder, verdict_message


def test_openai_structured_output_splits_into_the_bound_model_and_its_parser() -> None:
    model = ChatOpenAI(model="m", base_url="http://127.0.0.1:9/v1", api_key="k")  # type: ignore[arg-type]
    for method in ("json_schema", "function_calling", "json_mode"):
        split = split_structured_output(model.with_structured_output(JudgeAnswer, method=method))
        assert split is not None, method
        bound, _parser = split
        assert isinstance(bound, RunnableBinding) and bound.bound is model


def test_the_split_parses_what_the_whole_runnable_parses() -> None:
    model = MalformedChatModel(responder=default_responder(), bad_calls=0)
    structured = model.with_structured_output(JudgeAnswer)
    split = split_structured_output(structured)
    assert split is not None
    raw = verdict_message("Second", prob_first=0.2)
    assert split[1].invoke(raw) == structured.steps[-1].invoke(raw)
    assert split[1].invoke(raw).choice == "Second"


def test_other_shapes_are_not_split() -> None:
    model = MalformedChatModel(responder=default_responder(), bad_calls=0)
    structured = model.with_structured_output(JudgeAnswer)
    assert split_structured_output(structured.with_config(run_name="renamed")) is None
    assert split_structured_output(RunnableLambda(lambda x: x)) is None

    async def parse(message: object) -> object:
        return message

    assert split_structured_output(structured.first | RunnableLambda(parse)) is None
