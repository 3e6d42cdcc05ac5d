"""Rerank any chat model's samples with a user's judge: best-of-N as one LCEL chain.

``best_of_n(chat_model, judge, n)`` returns a Runnable that takes ``{"question": str}``, samples
`n` replies from `chat_model` (batched through ``.map()``), lets `judge` rank them for the user,
and returns the best reply. The judge is anything with ``rank(context, candidates)``: here the
persona judge built from the user's stored persona and demos, but the default, offline or hybrid
judge plug in the same way. Nothing of the chat graph is needed.

Run: ``python -m examples.best_of_n --user alice "Suggest a weekend project"``
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel

from agent.conversation import as_turns
from agent.judge import PairwiseJudge
from agent.records import Ranking


def best_of_n(
    chat_model: BaseChatModel, judge: PairwiseJudge, *, n: int = 4
) -> Runnable[dict[str, Any], str]:
    """Return a chain: question -> n sampled replies -> judge's ranking -> best reply."""
    if not 1 <= n <= 8:
        raise ValueError("n must be 1-8 (the judge ranks at most 8 candidates)")

    def prompts(inputs: dict[str, Any]) -> list[str]:
        return [inputs["question"]] * n

    def distinct(replies: list[str]) -> list[str]:
        kept = list(dict.fromkeys(reply.strip() for reply in replies if reply.strip()))
        if not kept:
            raise ValueError("the chat model returned no usable reply")
        return kept

    async def rank(inputs: dict[str, Any]) -> Ranking:
        return await judge.rank(as_turns([inputs["question"]]), inputs["candidates"])

    sample = RunnableLambda(prompts) | (chat_model | StrOutputParser()).map() | RunnableLambda(distinct)
    return (
        RunnableParallel(question=RunnableLambda(lambda inputs: inputs["question"]), candidates=sample)
        | RunnableLambda(rank)
        | RunnableLambda(lambda ranking: ranking.best.content)
    ).with_config(run_name="best_of_n")


async def main(user_id: str, question: str, n: int) -> None:
    """Build the user's judge from settings and memory, then rerank the chat model's samples."""
    from graphs.judges import LLMJudges
    from persona_agent.factory import build_chat_model, build_judge_model, build_store
    from persona_agent.settings import load_settings

    settings = load_settings()
    store = build_store(settings)
    persona = await asyncio.to_thread(store.current_persona, user_id)
    demos = (
        await asyncio.to_thread(store.retrieve_demos, user_id, question, settings.demo_k) if persona else []
    )
    judge, label = LLMJudges(build_judge_model(settings)).build(persona, demos)
    chain = best_of_n(build_chat_model(settings), judge, n=n)
    print(await chain.ainvoke({"question": question}))
    print(f"(best of {n}, {label} judge)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", default="example-user")
    parser.add_argument("-n", type=int, default=4)
    parser.add_argument("question")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.user, arguments.question, arguments.n))
