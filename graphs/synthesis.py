"""The synthesis graph: fit a user's persona and demos from their stored pairs, gate it, save it.

``load_pairs -> fit_persona -> annotate_pairs -> save_persona (when accepted) -> END``

- `load_pairs` reads the user's newest ``synthesizer.max_pairs`` pairs and splits them with
  `agent.evaluation.split_train_val`: a pair validates or trains by a hash of its content,
  siblings of one ``choice`` together, so no pair that any persona was fitted on ever validates
  a later one. Validation pairs are never trained on, even when there are too few for a gate.
  Fewer than 2 train pairs: outcome "skipped" (the next trigger tries again with more).
- `fit_persona` runs the synthesizer's `fit` (SynthesizeMe, or the offline reward model's
  `agent.offline_persona.OfflinePersonaWriter`, as the settings choose) with the current persona
  and demos as the gate's baseline, then keeps the persona to the statements the user pinned,
  added or removed (`agent.persona_edits`: the offline model held to pinned directions, the
  user's own statements appended verbatim, removed ones left out until new pairs back them).
- `annotate_pairs` records on every train pair whether the default judge predicted it
  (``default_judge_correct``) and whether it has verified reasoning (kept with the pair, so that
  retrieved demos carry it); pairs the new persona corrected count as verified when it is accepted.
- `save_persona` stores the persona and demos as the user's next version.

One synthesis of a user runs at a time, across every process sharing the store: `load_pairs`
takes the user's synthesis lease (`PreferenceStore.acquire_lease`) and ends the run as "skipped"
while another run holds it; the fit renews the lease while it runs, `save_persona` saves only
while the lease is still held, and every way out of the graph releases it (a crashed process's
lease runs out). A fit that fails (after the node's declared retries of transient errors) ends
the run with the outcome "failed" and the error's text; a fit whose model wrote no description
of a taste (`agent.records.persona_problem`: junk, loops, directions to the judge) ends
"rejected" with the reason. Either way the current persona stays in place. The run's context
carries the `user_id` (`SynthesisContext`); the input may be empty (``{}``). The graph is usable
on its own (``langgraph.json`` names it) and from the chat graph, which invokes it. Each stage
is streamed as it starts (``stream_mode="custom"``; `run_synthesis` hands them to a callback).

The nodes are methods of `SynthesisNodes`, which holds the synthesizer and the store they use;
`build_graph` wires them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langgraph.errors import NodeError
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer, Command, RetryPolicy

from agent.errors import NotFound, PersonaRejected
from agent.fit_stages import StageReporter, SynthesisResult
from agent.persona_edits import apply_edits, held_to_pins, restater
from agent.records import utc_now
from agent.splits import MIN_TRAIN_PAIRS, split_train_val
from agent.synthesis import PersonaSynthesizer
from graphs.retry import is_transient
from graphs.state import (
    SynthesisContext,
    SynthesisOutcome,
    SynthesisState,
    SynthesisStatus,
    pair_from_state,
    pair_to_state,
    user_of,
)
from memory.leases import Lease

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from memory.store import PreferenceStore

logger = logging.getLogger(__name__)

SYNTHESIS_LEASE = "synthesis"
# LangGraph names the node that runs fit_persona's `error_handler` after it; its update streams under it.
FIT_FALLBACK = "__error_handler__fit_persona"


def outcome(
    status: SynthesisStatus,
    detail: str,
    *,
    result: SynthesisResult | None = None,
    version: int | None = None,
    train: int = 0,
    val: int = 0,
) -> SynthesisOutcome:
    """Summarize a synthesis run for the state."""
    return SynthesisOutcome(
        status=status,
        persona_version=version,
        val_accuracy=result.persona.val_accuracy if result else None,
        baseline_val_accuracy=result.baseline_val_accuracy if result else None,
        train_pairs=len(result.train_pair_ids) if result else train,
        val_pairs=len(result.val_pair_ids) if result else val,
        llm_calls=result.usage.total.calls if result else 0,
        detail=detail,
        finished_at=utc_now().isoformat(),
    )


def _report(runtime: Runtime[SynthesisContext], stage: str, detail: str) -> None:
    """Stream the stage that starts now (``stream_mode="custom"``): ``{"synthesis_stage", "detail"}``."""
    runtime.stream_writer({"synthesis_stage": stage, "detail": detail})


async def run_synthesis(
    graph: CompiledStateGraph[SynthesisState, SynthesisContext, SynthesisState, SynthesisState],
    user_id: str,
    *,
    on_stage: StageReporter | None = None,
) -> SynthesisOutcome:
    """Run the synthesis graph for one user and return its outcome; a failure is returned, never raised.

    `on_stage(stage, detail)` hears each stage as it starts: load, then the synthesizer's own
    (SynthesizeMe: bootstrap, induce, demos, select, gate; the offline writer: offline), then
    annotate and save.
    """
    result: SynthesisOutcome | None = None
    context = SynthesisContext(user_id=user_id)
    try:
        if on_stage is None:  # invoked, so that a parent graph's stream still sees the stages
            result = (await graph.ainvoke({}, context=context)).get("outcome")
        else:
            async for mode, chunk in graph.astream({}, context=context, stream_mode=["updates", "custom"]):
                if mode == "custom" and isinstance(chunk, dict) and "synthesis_stage" in chunk:
                    on_stage(str(chunk["synthesis_stage"]), str(chunk.get("detail", "")))
                elif mode == "updates" and isinstance(chunk, dict):
                    for values in chunk.values():
                        if isinstance(values, dict) and values.get("outcome"):
                            result = values["outcome"]
    except Exception as exc:  # a failed synthesis must not fail what runs it
        logger.warning("synthesis for %s failed; the current persona stays: %r", user_id, exc)
        return outcome("failed", f"{type(exc).__name__}: {exc}")
    return result or outcome("failed", "the synthesis ended without outcome")


async def _release(memory: PreferenceStore, held: Mapping[str, Any] | None) -> None:
    """Release the run's synthesis lease, if it holds one."""
    if held is not None:
        await asyncio.to_thread(memory.release_lease, Lease.from_dict(held))


@asynccontextmanager
async def _renewing(memory: PreferenceStore, held: Mapping[str, Any] | None) -> AsyncIterator[None]:
    """Renew the run's synthesis lease every third of its duration while the block runs."""
    if held is None:
        yield
        return
    lease = Lease.from_dict(held)

    async def renew() -> None:
        while True:
            await asyncio.sleep(max(memory.lease_s / 3, 0.05))
            if not await asyncio.to_thread(memory.renew_lease, lease):
                logger.warning("the synthesis lease of %s was taken over", lease.user_id)
                return

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def route_after_annotation(state: SynthesisState) -> str:
    """Save only an accepted persona."""
    result = state.get("result") or {}
    return "save_persona" if result.get("accepted") else END


@dataclass(frozen=True)
class SynthesisNodes:
    """The synthesis graph's nodes over the parts they use; `build_graph` wires them."""

    synthesizer: PersonaSynthesizer
    memory: PreferenceStore

    async def load_pairs(self, state: SynthesisState, runtime: Runtime[SynthesisContext]) -> Command[Any]:
        """Read the user's newest pairs and split them into train and val."""
        user_id = user_of(runtime)
        _report(runtime, "load", "reading your pairs")
        lease = await asyncio.to_thread(self.memory.acquire_lease, user_id, SYNTHESIS_LEASE)
        if lease is None:
            busy = outcome("skipped", "another synthesis of this user is running")
            return Command(update={"outcome": busy, "result": None, "lease": None}, goto=END)
        try:
            pairs = await asyncio.to_thread(self.memory.newest_pairs, user_id, self.synthesizer.max_pairs)
        except BaseException:
            await _release(self.memory, lease.as_dict())
            raise
        train, val = split_train_val(pairs)
        if len(train) < MIN_TRAIN_PAIRS:
            await _release(self.memory, lease.as_dict())
            skipped = outcome(
                "skipped",
                f"{len(pairs)} pairs stored, {len(train)} of them for training; a persona needs at least "
                f"{MIN_TRAIN_PAIRS}",
                train=len(train),
                val=len(val),
            )
            return Command(update={"outcome": skipped, "result": None, "lease": None}, goto=END)
        return Command(
            update={
                "train": [pair_to_state(p) for p in train],
                "val": [pair_to_state(p) for p in val],
                "lease": lease.as_dict(),
            },
            goto="fit_persona",
        )

    async def fit_persona(self, state: SynthesisState, runtime: Runtime[SynthesisContext]) -> dict[str, Any]:
        """Synthesize a persona and demos, gated against the current persona on the val pairs."""
        user_id = user_of(runtime)
        current, current_demos, edits = await asyncio.gather(
            asyncio.to_thread(self.memory.current_persona, user_id),
            asyncio.to_thread(self.memory.current_demos, user_id),
            asyncio.to_thread(self.memory.statement_edits, user_id),
        )
        train = [pair_from_state(p) for p in state.get("train", [])]
        val = [pair_from_state(p) for p in state.get("val", [])]
        fit = held_to_pins(self.synthesizer, edits).fit(
            train,
            val,
            current=current,
            current_demos=current_demos,
            on_stage=lambda stage, detail: _report(runtime, stage, detail),
        )
        async with _renewing(self.memory, state.get("lease")):
            result = await fit
            if edits:  # the user's pinned, added and removed statements, kept verbatim
                persona = await asyncio.to_thread(
                    apply_edits, result.persona, edits, [*train, *val], restate=restater(self.synthesizer)
                )
                result = result.model_copy(update={"persona": persona})
        return {"result": result.model_dump(mode="json")}

    async def record_failure(self, state: SynthesisState, error: NodeError) -> dict[str, Any]:
        """End the run "failed" ("rejected" when the persona was not a taste); the current one stays."""
        rejected = isinstance(error.error, PersonaRejected)
        # the log says what the outcome says: an operator counting failures counts the same runs
        if rejected:
            logger.warning("synthesis rejected the persona; the current one stays in place: %s", error.error)
        else:
            logger.warning("synthesis failed; the current persona stays in place: %r", error.error)
        await _release(self.memory, state.get("lease"))
        ended = outcome(
            "rejected" if rejected else "failed",
            str(error.error) if rejected else f"{type(error.error).__name__}: {error.error}",
            train=len(state.get("train", [])),
            val=len(state.get("val", [])),
        )
        return {"outcome": ended, "result": None, "lease": None}

    async def annotate_pairs(
        self, state: SynthesisState, runtime: Runtime[SynthesisContext]
    ) -> dict[str, Any]:
        """Record what the default judge made of each train pair, and any verified reasoning."""
        user_id = user_of(runtime)
        _report(runtime, "annotate", "recording what the judge made of each pair")
        result = SynthesisResult.model_validate(state["result"])
        notes = result.pair_annotations()
        try:
            try:
                await asyncio.to_thread(self.memory.annotate_pairs, user_id, notes)
            except NotFound as exc:  # a pair deleted while the fit ran: the other notes still matter
                logger.info("annotating after synthesis: %s", exc)
                present = {
                    p.id
                    for p in await asyncio.to_thread(
                        self.memory.newest_pairs, user_id, self.synthesizer.max_pairs
                    )
                }
                await asyncio.to_thread(
                    self.memory.annotate_pairs, user_id, {k: v for k, v in notes.items() if k in present}
                )
        except BaseException:
            await _release(self.memory, state.get("lease"))
            raise
        if result.accepted:
            return {}
        await _release(self.memory, state.get("lease"))
        rejected = outcome(
            "rejected",
            result.rejected_because
            or f"val accuracy {result.persona.val_accuracy} below the current persona's "
            f"{result.baseline_val_accuracy}",
            result=result,
        )
        return {"outcome": rejected, "lease": None}

    async def save_persona(self, state: SynthesisState, runtime: Runtime[SynthesisContext]) -> dict[str, Any]:
        """Store the persona and its demos as the user's next version."""
        _report(runtime, "save", "saving the new persona")
        result = SynthesisResult.model_validate(state["result"])
        held = state.get("lease")
        try:
            if held is not None and not await asyncio.to_thread(
                self.memory.renew_lease, Lease.from_dict(held)
            ):
                # It expired and another run took it over: that run's persona must not be outrun.
                lost = outcome("failed", "the synthesis lease expired before the persona was saved")
                return {"outcome": lost, "lease": None}
            stored = await asyncio.to_thread(self.memory.save_persona, result.persona, result.demos)
        finally:
            await _release(self.memory, held)
        accepted = outcome(
            "accepted",
            f"persona v{stored.version} with {len(result.demos)} demos",
            result=result,
            version=stored.version,
        )
        return {"outcome": accepted, "lease": None}


def build_graph(
    *,
    synthesizer: PersonaSynthesizer,
    memory: PreferenceStore,
    checkpointer: Checkpointer = None,
    attempts: int = 2,
    retry_interval_s: float = 1.0,
    timeout_s: float | None = None,
    name: str = "synthesis",
) -> CompiledStateGraph[SynthesisState, SynthesisContext, SynthesisState, SynthesisState]:
    """Compile the synthesis graph over a persona synthesizer (SynthesizeMe, the offline writer) and a store.

    `attempts` and `retry_interval_s` declare the fit's retries of transient errors (timeouts,
    connection errors, unusable model output); `timeout_s` caps one fit attempt.
    ``checkpointer=False`` runs it without checkpoints even inside a checkpointed parent.
    """
    nodes = SynthesisNodes(synthesizer=synthesizer, memory=memory)
    retry = RetryPolicy(max_attempts=attempts, initial_interval=retry_interval_s, retry_on=is_transient)
    builder = StateGraph(SynthesisState, context_schema=SynthesisContext)
    builder.add_node(nodes.load_pairs, destinations=("fit_persona", END))
    # `destinations` declares, for drawing, the edge LangGraph takes into the error handler.
    builder.add_node(
        nodes.fit_persona,
        retry_policy=retry,
        timeout=timeout_s,
        error_handler=nodes.record_failure,
        destinations={FIT_FALLBACK: "error"},
    )
    builder.add_node(nodes.annotate_pairs)
    builder.add_node(nodes.save_persona)
    builder.add_edge(START, "load_pairs")
    builder.add_edge("fit_persona", "annotate_pairs")
    builder.add_conditional_edges("annotate_pairs", route_after_annotation, ["save_persona", END])
    builder.add_edge("save_persona", END)
    builder.add_edge(FIT_FALLBACK, END)
    return builder.compile(checkpointer=checkpointer, name=name)
