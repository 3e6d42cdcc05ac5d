"""The chat graph: answer each turn with the candidate this user's judge prefers, and learn from picks.

One run handles one input (``{"messages": [user message]}`` and/or ``{"feedback": ...}``) for the
user named in the run context (`ChatContext.user_id`)::

    START -> record_feedback -> [synthesize_persona]* -> load_persona
          -> (draft_replies and retrieve_demos, side by side)
          -> judge_replies -> [synthesize_persona]** -> END
    draft_replies or judge_replies failing after retries -> its error handler
          -> [synthesize_persona]** -> END

1. `record_feedback` applies feedback on the previous turn (`graphs.feedback`): ``{"choice": i}``
   pairs candidate ``i`` against every other candidate of that turn and makes it the
   conversation's reply; ``{"chosen", "rejected"[, "context"]}`` stores one pair, and
   ``{"quiz": {"question", "choice"}}`` an answer to the starting quiz (`agent.starting`), all
   source "explicit"; ``{"edited": text}`` makes the user's text the reply and stores it over the
   original (source "edit"); ``{"regenerate": true}`` takes the reply back, so the run answers
   the same message again, and the reply the user keeps is stored over the ones they turned down
   once they send their next message (source "regenerate"). A synthesis is due with no persona
   learnt from pairs (none, or a starting archetype's) at ``first_synthesis_at`` pairs (5), else
   once ``resynthesize_every`` (3) more arrived; after a failed, rejected or skipped one, at
   ``resynthesize_every`` more (per thread), not each turn.
2. `load_persona` fixes the conversation this turn answers (its last ``max_context_turns``
   turns) with the persona `record_feedback` read (or `synthesize_persona`, after an inline
   synthesis).
3. `draft_replies` drafts ``candidates`` replies, each with its own style hint and seed,
   conditioned on the persona when there is one (on a regenerate, with new seeds and without
   the replies the user asked to redo). At the same time `retrieve_demos` gives, when
   there is a persona, the demos the synthesis chose for it on val, then up to ``demo_k`` more
   of the user's stored pairs retrieved for the new message: only the judge needs them, so the
   query embedding and the store reads run while the model drafts.
4. `judge_replies` ranks them with the turn's judge (the default LLM judge before a persona
   exists, the persona judge after, or the offline / hybrid judge when configured) and answers
   with the winner as an `AIMessage`. Candidates, ranking with reasons, judge, persona version
   and demos stay in the state, so ``graph.get_state(config)`` shows them and the next input can
   give feedback on them.

The nodes are methods of `ChatNodes`, which holds the parts they use (the chat model, the store,
the judges, the synthesis graph and the options); `build_graph` builds the parts and wires them.

Inline or deferred synthesis (``synthesis_mode``; a run may override it in its context):
*inline* runs `synthesize_persona` before answering, so the reply already uses the new persona;
*deferred* (the default) answers first and runs `synthesize_persona` at the end of the same run
(``**``), so the reply is streamed before the slow fit starts. Both work under ``langgraph dev``.
*caller* (a run context value only, not a setting) runs no synthesis: the run ends with
``state["synthesis_due"] == "caller"`` and the caller runs the synthesis graph itself
(`graphs.synthesis.run_synthesis`) and reports the outcome to the thread with
``update_state(config, synthesis_recorded(outcome, pair_count), as_node="synthesize_persona")``;
`persona-agent chat` does this in the background, so no prompt waits on a fit. A feedback-only
input (no new user message) ends after feedback, or after the synthesis it triggered.
`synthesize_persona` invokes the synthesis graph (`graphs.synthesis`); a synthesis that fails is
logged and recorded in ``state["synthesis"]``, the current persona stays, and the turn is still
answered.

Failures of models: drafting and judging have a declared `RetryPolicy` over transient errors
(timeouts, connection errors, malformed output; `graphs.retry.is_transient`) and an optional
per-attempt timeout. When drafting still fails the turn is answered with an apology that says the
model failed (``state["reply_fallback"]`` holds the error, no candidates are kept); when judging
fails the first candidate is the answer (``state["judge_fallback"]`` says why). Each fallback is
the node's error handler (`DRAFT_FALLBACK`, `JUDGE_FALLBACK`), routed on like `judge_replies`. A
judge comparison whose output stays malformed is a tie inside the judge, counted in
``judge_fallback`` too.

Streaming: ``astream(..., stream_mode="updates")`` yields one ``{node: update}`` per finished node
(``record_feedback``, ``load_persona``, ``draft_replies`` and ``retrieve_demos`` in either order,
``judge_replies``, ``synthesize_persona``; an error handler's update appears under
``__error_handler__<node>``); add ``subgraphs=True`` to see the synthesis graph's own nodes.
``stream_mode="messages"`` yields the token chunks of every model call inside the nodes (each
candidate's draft, the judge's JSON verdicts, the synthesis calls) with metadata naming the
node; the chosen reply itself is not a model call, so read it from the ``judge_replies`` update
(or ``"values"``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langgraph.errors import NodeError
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer, RetryPolicy

from agent.demo_sets import merge_demos
from agent.drafting import draft_candidates
from agent.errors import BudgetExceeded, Forbidden, InvalidPreference, ModelOutputError, PersonaAgentError
from agent.records import Demo, Persona, PreferencePair
from agent.starting import QUIZ_METADATA, is_archetype_persona, retaken_answers
from agent.synthesis import PersonaSynthesizer, SynthesizeMe
from graphs import synthesis
from graphs.feedback import apply_feedback, redone_replies
from graphs.judges import JudgeFactory, LLMJudges
from graphs.retry import is_transient
from graphs.state import (
    ChatContext,
    ChatState,
    PersonaView,
    RankedView,
    SynthesisMode,
    SynthesisOutcome,
    awaits_reply,
    demo_from_state,
    persona_view,
    ranking_view,
    turn_dicts,
    turns_from,
    turns_of,
    user_of,
)

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from graphs.state import SynthesisContext, SynthesisState
    from memory.store import PreferenceStore

    SynthesisGraph = CompiledStateGraph[SynthesisState, SynthesisContext, SynthesisState, SynthesisState]

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 8
# LangGraph names the node that runs a node's `error_handler` after it; updates stream under it.
DRAFT_FALLBACK = "__error_handler__draft_replies"
JUDGE_FALLBACK = "__error_handler__judge_replies"
APOLOGY = (
    "Sorry, I could not answer this time: the language model failed ({reason}). Please try again in a moment."
)


@dataclass(frozen=True)
class ChatOptions:
    """Behaviour of the chat graph; `persona_agent.factory` fills it from settings."""

    candidates: int = 3
    first_synthesis_at: int = 5
    resynthesize_every: int = 3
    synthesis_mode: SynthesisMode = "deferred"
    demo_k: int = 3
    similarity_weight: float = 1.0
    informativeness_weight: float = 0.3
    mmr_lambda: float = 0.7
    concurrency: int = 1
    structured_method: str = "json_schema"
    max_context_turns: int = 64
    attempts: int = 2
    retry_interval_s: float = 0.5
    reply_timeout_s: float | None = None
    synthesis_timeout_s: float | None = None


def synthesis_due(
    *, total: int, since_persona: int, has_persona: bool, retry_after: int | None, options: ChatOptions
) -> bool:
    """Say whether the stored pairs call for a (re-)synthesis now."""
    due = since_persona >= options.resynthesize_every if has_persona else total >= options.first_synthesis_at
    if due and retry_after is not None:
        due = total - retry_after >= options.resynthesize_every
    return due


def synthesis_recorded(result: SynthesisOutcome, pair_count: int) -> dict[str, Any]:
    """Return the thread's update after a synthesis: its outcome, and when to try again if it failed."""
    retry_after = None if result["status"] == "accepted" else pair_count
    return {"synthesis": result, "synthesis_due": None, "synthesis_retry_after": retry_after}


def _context_value(runtime: Runtime[ChatContext], name: str) -> Any:
    context = runtime.context
    return context.get(name) if isinstance(context, Mapping) else getattr(context, name, None)


# --- routers ---------------------------------------------------------------------------------
def route_after_feedback(state: ChatState) -> str:
    """Synthesize first (inline), answer, or stop when there is nothing to answer."""
    due = state.get("synthesis_due")
    if due == "inline" or (due == "deferred" and not awaits_reply(state)):
        return "synthesize_persona"
    return "load_persona" if awaits_reply(state) else END


def route_after_synthesis(state: ChatState) -> str:
    """Answer the new message when the synthesis ran before the reply (inline)."""
    return "load_persona" if awaits_reply(state) else END


def route_after_reply(state: ChatState) -> str:
    """Run a deferred synthesis once the turn is answered; otherwise end the run."""
    return "synthesize_persona" if state.get("synthesis_due") == "deferred" else END


# --- nodes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatNodes:
    """The chat graph's nodes over the parts they use; `build_graph` builds the parts and wires the nodes."""

    chat_model: BaseChatModel
    memory: PreferenceStore
    judges: JudgeFactory
    synthesis_graph: SynthesisGraph
    options: ChatOptions

    async def record_feedback(self, state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
        """Store the user's feedback on the previous turn as pairs; decide whether to synthesize."""
        user_id = user_of(runtime)
        owner = state.get("owner")
        if owner is not None and owner != user_id:
            # A thread id is only a key: without this check a run for one user could read
            # another user's conversation through its thread.
            raise Forbidden("this thread belongs to another user")
        update: dict[str, Any] = {"pairs_added": [], "owner": user_id}
        effect = apply_feedback(state, user_id, self.memory.limits)
        if effect.pairs:
            update["pairs_added"] = await asyncio.to_thread(self.memory.add_pairs, user_id, effect.pairs)
            await asyncio.to_thread(self._forget_retaken_answers, user_id, effect.pairs)
        update.update(effect.update)
        counts = await asyncio.to_thread(self.memory.pair_counts, user_id)
        due = synthesis_due(
            total=counts.total,
            since_persona=counts.since_persona,
            has_persona=counts.persona is not None and not is_archetype_persona(counts.persona),
            retry_after=state.get("synthesis_retry_after"),
            options=self.options,
        )
        mode = _context_value(runtime, "synthesis_mode") or self.options.synthesis_mode
        update.update(pair_count=counts.total, synthesis_due=mode if due else None)
        if (
            awaits_reply(state) or effect.answers_again
        ):  # the persona the reply uses, unless synthesized inline
            update["persona"] = persona_view(counts.persona)
        return update

    def _forget_retaken_answers(self, user_id: str, added: list[PreferencePair]) -> None:
        """Delete the user's earlier answers to quiz questions they answered again (after storing the new)."""
        if not any(QUIZ_METADATA in pair.metadata for pair in added):
            return
        stored = self.memory.list_pairs(user_id, limit=self.memory.count_pairs(user_id), source="explicit")
        for pair_id in retaken_answers(stored, added):
            self.memory.delete_pair(user_id, pair_id)

    async def synthesize_persona(self, state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
        """Run the synthesis graph for this user; a failure is recorded, never raised."""
        user_id = user_of(runtime)
        result = await synthesis.run_synthesis(self.synthesis_graph, user_id)
        update = synthesis_recorded(result, state.get("pair_count", 0))
        if awaits_reply(state):  # inline: this turn's reply uses the persona as it is now
            update["persona"] = persona_view(await asyncio.to_thread(self.memory.current_persona, user_id))
        return update

    async def load_persona(self, state: ChatState) -> dict[str, Any]:
        """Fix the conversation this turn answers, judged with the persona `record_feedback` read
        this run (or `synthesize_persona` read again after an inline synthesis): the current one."""
        max_turns = min(self.options.max_context_turns, self.memory.limits.max_context_turns)
        context = turns_of(state.get("messages") or [])[-max_turns:]
        if not context or context[-1].role != "user":
            raise InvalidPreference("messages: the last message must be a non-empty user message")
        return {"turn_context": turn_dicts(context)}

    async def retrieve_demos(self, state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
        """Give the persona judge the persona's val-selected demos and the pairs retrieved for this query."""
        demos: list[Demo] = []
        if state.get("persona") is not None:
            user_id = user_of(runtime)
            options = self.options
            selected = asyncio.to_thread(self.memory.current_demos, user_id)
            retrieved = asyncio.to_thread(
                self.memory.retrieve_demos,
                user_id,
                turns_from(state.get("turn_context") or []),
                options.demo_k,
                similarity_weight=options.similarity_weight,
                informativeness_weight=options.informativeness_weight,
                mmr_lambda=options.mmr_lambda,
            )
            demos = merge_demos(*await asyncio.gather(selected, retrieved))
        return {"demos": [demo.model_dump(mode="json") for demo in demos]}

    async def draft_replies(self, state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
        """Draft several different candidate replies, persona-conditioned when there is a persona."""
        count = _context_value(runtime, "candidates") or self.options.candidates
        persona = state.get("persona")
        redone = redone_replies(state)  # a regenerate: new seeds, and no reply the user turned down
        drafts = await draft_candidates(
            self.chat_model,
            turns_from(state.get("turn_context") or []),
            n=max(1, min(int(count), MAX_CANDIDATES)),
            persona=persona["text"] if persona else None,
            concurrency=self.options.concurrency,
            seed=len(state.get("messages") or []) + MAX_CANDIDATES * len(redone),
        )
        drafts = [draft for draft in drafts if draft not in redone]
        if not drafts:
            raise ModelOutputError(
                "the chat model returned no usable reply" + (" other than those to redo" if redone else "")
            )
        return {"candidates": drafts, "reply_fallback": None}

    async def judge_replies(self, state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
        """Rank the candidates with this user's judge and answer with the winner."""
        user_id = user_of(runtime)
        view: PersonaView | None = state.get("persona")
        persona = (
            Persona.model_validate({"user_id": user_id, "text": view["text"], "version": view["version"]})
            if view is not None
            else None
        )
        demos = [demo_from_state(data) for data in state.get("demos") or []]
        judge, label = await self.judges(user_id, persona, demos)
        context = turns_from(state.get("turn_context") or [])
        ranking = await judge.rank(context, state.get("candidates") or [])
        fallbacks = int(getattr(judge, "fallbacks", 0))
        untied = f"{fallbacks} comparisons had no usable verdict (counted as ties)" if fallbacks else None
        return {
            "ranking": ranking_view(ranking),
            "judge": label,
            "judge_fallback": untied,
            "messages": [AIMessage(ranking.best.content)],
        }


# --- error handlers --------------------------------------------------------------------------
async def apologize(state: ChatState, error: NodeError) -> dict[str, Any]:
    """Answer with an apology that says the model failed; keep no candidates."""
    _raise_unless_model_failure(error.error, "drafting")
    reason = f"{type(error.error).__name__}: {error.error}"
    return {
        "messages": [AIMessage(APOLOGY.format(reason=type(error.error).__name__))],
        "candidates": [],
        "ranking": [],
        "judge": "none",
        "judge_fallback": None,
        "reply_fallback": reason,
    }


async def answer_first_candidate(state: ChatState, error: NodeError) -> dict[str, Any]:
    """Answer with the first candidate when judging failed, and record why."""
    _raise_unless_model_failure(error.error, "judging")
    candidates = state.get("candidates") or []
    reason = (
        f"judging failed, answered with the first candidate ({type(error.error).__name__}: {error.error})"
    )
    return {
        "ranking": [
            RankedView(index=index, content=text, score=0.0, wins=0, reasons=[reason] if index == 0 else [])
            for index, text in enumerate(candidates)
        ],
        "judge_fallback": reason,
        "messages": [AIMessage(candidates[0])],
    }


def _raise_unless_model_failure(error: BaseException, stage: str) -> None:
    """Re-raise errors that are not a model's fault (bad input, configuration); log the rest."""
    if isinstance(error, PersonaAgentError) and not isinstance(error, ModelOutputError | BudgetExceeded):
        raise error
    if not isinstance(error, Exception):
        raise error
    if is_transient(error):
        logger.warning("%s failed after retries: %r", stage, error)
    else:
        logger.error("%s failed with an unexpected error", stage, exc_info=error)


# --- wiring ----------------------------------------------------------------------------------
def build_graph(
    *,
    chat_model: BaseChatModel,
    judge_model: BaseChatModel,
    memory: PreferenceStore,
    checkpointer: Checkpointer = None,
    synthesizer: PersonaSynthesizer | None = None,
    judges: JudgeFactory | None = None,
    options: ChatOptions | None = None,
    name: str = "chat",
) -> CompiledStateGraph[ChatState, ChatContext, ChatState, ChatState]:
    """Compile the chat graph over a drafting model, a judge model and the memory store.

    `synthesizer` defaults to SynthesizeMe over the two models; `judges` defaults to the LLM
    judge (default before a persona, persona judge after). Pass `checkpointer` to keep threads.
    """
    options = options or ChatOptions()
    synthesizer = synthesizer or SynthesizeMe(
        chat_model,
        judge_model=judge_model,
        structured_method=options.structured_method,
        concurrency=options.concurrency,
    )
    nodes = ChatNodes(
        chat_model=chat_model,
        memory=memory,
        judges=judges
        or LLMJudges(
            judge_model, structured_method=options.structured_method, concurrency=options.concurrency
        ),
        synthesis_graph=synthesis.build_graph(
            synthesizer=synthesizer,
            memory=memory,
            checkpointer=False,  # its state is transient; the chat thread records the outcome
            attempts=options.attempts,
            retry_interval_s=options.retry_interval_s,
            timeout_s=options.synthesis_timeout_s,
        ),
        options=options,
    )
    retry = RetryPolicy(
        max_attempts=options.attempts, initial_interval=options.retry_interval_s, retry_on=is_transient
    )
    # Every route out of a node is a conditional edge, the fallbacks' included (each error handler
    # is a node of its own). `destinations` only declares, for drawing, the edge into a node's error
    # handler, which LangGraph takes itself when retries are spent; mixing unlabelled Command
    # destinations with conditional edges from one node breaks `get_graph()` (langgraph#7691).
    builder = StateGraph(ChatState, context_schema=ChatContext)
    builder.add_node(nodes.record_feedback)
    builder.add_node(nodes.synthesize_persona)
    builder.add_node(nodes.load_persona)
    builder.add_node(nodes.retrieve_demos)
    builder.add_node(
        nodes.draft_replies,
        retry_policy=retry,
        timeout=options.reply_timeout_s,
        error_handler=apologize,
        destinations={DRAFT_FALLBACK: "error"},
    )
    builder.add_node(
        nodes.judge_replies,
        retry_policy=retry,
        timeout=options.reply_timeout_s,
        error_handler=answer_first_candidate,
        destinations={JUDGE_FALLBACK: "error"},
    )
    builder.add_edge(START, "record_feedback")
    builder.add_conditional_edges(
        "record_feedback", route_after_feedback, ["synthesize_persona", "load_persona", END]
    )
    builder.add_conditional_edges("synthesize_persona", route_after_synthesis, ["load_persona", END])
    builder.add_edge("load_persona", "draft_replies")
    builder.add_edge("load_persona", "retrieve_demos")
    builder.add_edge(["draft_replies", "retrieve_demos"], "judge_replies")
    for answered in ("judge_replies", DRAFT_FALLBACK, JUDGE_FALLBACK):
        builder.add_conditional_edges(answered, route_after_reply, ["synthesize_persona", END])
    return builder.compile(checkpointer=checkpointer, name=name)
