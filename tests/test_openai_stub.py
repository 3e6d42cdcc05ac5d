"""The OpenAI-compatible stub answers like an endpoint would, and injects the faults it is asked to."""

from __future__ import annotations

import httpx
import openai
import pytest
from langchain_core.exceptions import OutputParserException
from langchain_openai import ChatOpenAI
from pydantic import ValidationError

from agent.fit_stages import InducedPersona
from agent.judge import JudgeAnswer
from devtools.openai_stub import OpenAIStub, instance_of


def _model(stub: OpenAIStub, **options: object) -> ChatOpenAI:
    return ChatOpenAI(model="stub", base_url=stub.base_url, api_key="k", max_retries=0, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_structured_answers_parse_as_the_projects_records(method: str, no_network: list[object]) -> None:
    with OpenAIStub() as stub:
        verdict = _model(stub).with_structured_output(JudgeAnswer, method=method).invoke("First or Second?")
        persona = (
            _model(stub).with_structured_output(InducedPersona, method=method).invoke("Describe the user")
        )
    assert isinstance(verdict, JudgeAnswer) and verdict.choice in ("First", "Second")
    assert isinstance(persona, InducedPersona) and "concise" in persona.persona
    assert (
        stub.counts == {"json_schema": 2} or stub.counts == {"tool": 2} or stub.counts == {"json_object": 2}
    )


def test_drafts_differ_by_prompt_and_stream(no_network: list[object]) -> None:
    with OpenAIStub() as stub:
        plain = _model(stub).invoke("How do I boil pasta?").text
        other = _model(stub).invoke([("system", "Be brief."), ("user", "How do I boil pasta?")]).text
        streamed = "".join(
            chunk.text for chunk in _model(stub, streaming=True).stream("How do I boil pasta?")
        )
    assert "How do I boil pasta?" in plain and plain != other
    assert streamed == plain


def test_injected_faults_fail_like_a_broken_endpoint(no_network: list[object]) -> None:
    with OpenAIStub(error_rate=1.0) as failing:
        with pytest.raises(openai.InternalServerError):
            _model(failing).invoke("hi")
        assert failing.counts == {"error": 1}
    with OpenAIStub(malformed_rate=1.0) as garbled:
        # json_schema answers are parsed by the openai client, which raises pydantic's error.
        with pytest.raises((OutputParserException, ValidationError)):
            _model(garbled).with_structured_output(JudgeAnswer, method="json_schema").invoke("which?")
        assert _model(garbled).invoke("text replies are never garbled").text
    with OpenAIStub() as stub:
        assert httpx.post(f"{stub.base_url}/chat/completions", content=b"{nope").status_code == 400


def test_schema_instances_respect_enums_bounds_and_refs() -> None:
    schema = {
        "type": "object",
        "properties": {
            "choice": {"enum": ["First", "Second"]},
            "p": {"type": "number", "minimum": 0, "maximum": 1},
            "n": {"type": "integer", "minimum": 3, "maximum": 5},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "inner": {"$ref": "#/$defs/Inner"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
        },
        "$defs": {"Inner": {"type": "object", "properties": {"persona": {"type": "string"}}}},
    }
    seen = {instance_of(schema, seed=seed)["choice"] for seed in range(4)}
    value = instance_of(schema, seed=7)
    assert seen == {"First", "Second"}
    assert 0 <= value["p"] <= 1 and 3 <= value["n"] <= 5 and len(value["tags"]) == 2
    assert "concise" in value["inner"]["persona"] and isinstance(value["maybe"], bool)
