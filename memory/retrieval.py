"""Which of a user's stored pairs a new conversation recalls: `PairRetrieval`, a part of the store.

Retrieval key. A pair is embedded by ``retrieval_text(context)``: the last user message (up to
1,000 characters) and, when that message is a short follow-up (under 16 words, "make it
shorter"), the tail of the turn before it (up to 300 characters). The chosen and rejected
replies answer the last user message, so that is what a new conversation must resemble for a
stored choice to be relevant; the preceding turn says what a short follow-up is about, and is
left out otherwise so that it neither dilutes the mean-pooled vector nor costs embedding time
on every turn. The last message comes first because the key is cut to ``RETRIEVAL_KEY_TOKENS``
(128) word pieces: all-MiniLM-L6-v2 was trained on inputs of that length, and the query is
embedded on every turn at a cost that grows with its length, so the cap bounds retrieval latency
(BENCHMARKS.md, section 5, has the figures). `retrieval_embeddings()` builds the store's embedder
with that cap. The replies are not embedded: a new turn has no replies yet when demos are
retrieved for it.

Retrieval ranks the user's own vectors exactly in numpy rather than with Chroma's HNSW search:
a user holds hundreds of pairs, and a nearest-neighbour query under a one-user filter pays for
the whole collection (BENCHMARKS.md, section 5). The vectors come from `memory.vector_cache` while
the user's pairs revision (renewed by every change to their pairs) is unchanged, else from one
filtered `get`. The HNSW index stays available for cross-user search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.errors import InvalidPreference
from agent.records import Demo, Turn
from memory.scope import ScopedStore, UserScope, pair_of
from memory.vector_cache import UserVectors, unit_rows

if TYPE_CHECKING:
    from memory.embeddings import MiniLMEmbeddings

RETRIEVAL_LAST_CHARS = 1_000
RETRIEVAL_PREVIOUS_CHARS = 300
RETRIEVAL_FOLLOW_UP_WORDS = 16
RETRIEVAL_KEY_TOKENS = 128


def retrieval_text(context: Sequence[Turn]) -> str:
    """Return the text a conversation is embedded by: its last user message, then for a short
    follow-up the tail of the turn before."""
    if not context:
        raise InvalidPreference("context: must hold at least one turn")
    last = context[-1].content.strip()[:RETRIEVAL_LAST_CHARS]
    if len(context) == 1 or len(last.split()) >= RETRIEVAL_FOLLOW_UP_WORDS:
        return last
    previous = context[-2].content.strip()[-RETRIEVAL_PREVIOUS_CHARS:]
    return f"{last}\n{previous}"


def retrieval_embeddings() -> MiniLMEmbeddings:
    """Return the store's embedding model: MiniLM with keys cut to `RETRIEVAL_KEY_TOKENS`."""
    from memory.embeddings import MiniLMEmbeddings

    return MiniLMEmbeddings(max_tokens=RETRIEVAL_KEY_TOKENS)


class PairRetrieval(ScopedStore):
    """Demo retrieval over a user's stored pairs, from the in-process copy of their vectors."""

    def retrieve_demos(
        self,
        user_id: str,
        query: str | Sequence[Turn],
        k: int,
        *,
        similarity_weight: float = 1.0,
        informativeness_weight: float = 0.3,
        mmr_lambda: float = 0.7,
    ) -> list[Demo]:
        """Pick up to `k` of the user's pairs as demos for a conversation.

        Relevance is ``similarity_weight * cosine(query, pair context) + informativeness_weight *
        informativeness``, where informativeness is 0.5 if the default judge got the pair wrong plus
        0.5 if it has verified reasoning. Maximal marginal relevance then trades relevance
        (weight `mmr_lambda`) against similarity to the demos already picked.
        """
        scope = self._scope(user_id)
        if k <= 0:
            return []
        if isinstance(query, str):
            text = query.strip()[:RETRIEVAL_LAST_CHARS]
            if not text:
                raise InvalidPreference("query: must not be empty")
        else:
            text = retrieval_text(tuple(query))
        query_vector = unit_rows(self._embeddings.embed([text]))[0]
        stored = self._user_vectors(scope)
        if not len(stored):
            return []
        vectors = stored.vectors
        similarity = vectors @ query_vector
        wrong, verified = stored.judge_wrong, stored.verified
        informativeness = 0.5 * wrong + 0.5 * verified
        relevance = similarity_weight * similarity + informativeness_weight * informativeness
        pool = np.argsort(-relevance, kind="stable")[: max(5 * k, 25)]
        candidates = [stored.pair_ids[i] for i in pool]
        similarity, wrong, verified = similarity[pool], wrong[pool], verified[pool]
        informativeness, relevance = informativeness[pool], relevance[pool]
        overlap = vectors[pool] @ vectors[pool].T
        picked: list[int] = []
        redundancy = np.full(len(candidates), -np.inf)
        while len(picked) < min(k, len(candidates)):
            penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
            gain = mmr_lambda * relevance - (1.0 - mmr_lambda) * penalty
            gain[picked] = -np.inf
            best = int(np.argmax(gain))
            picked.append(best)
            redundancy = np.maximum(redundancy, overlap[best])
        found = {
            row.metadata["pair_id"]: row
            for row in self._get(self._pairs, scope, keys=[candidates[i] for i in picked])
        }
        demos = []
        for rank, index in enumerate(picked):
            row = found.get(candidates[index])
            if row is None:  # deleted between the two reads
                continue
            reasons = [f"similarity {similarity[index]:.2f} to this conversation"]
            if wrong[index]:
                reasons.append("the default judge got it wrong")
            if verified[index]:
                reasons.append("it has verified reasoning")
            if rank:
                closest = max(float(overlap[index, other]) for other in picked[:rank])
                reasons.append(f"closest earlier demo {closest:.2f} similar")
            demos.append(
                Demo(
                    pair=pair_of(row),
                    reasoning=row.metadata.get("reasoning") if verified[index] else None,
                    similarity=float(similarity[index]),
                    informativeness=float(informativeness[index]),
                    score=float(relevance[index]),
                    why="; ".join(reasons),
                )
            )
        return demos

    def _user_vectors(self, scope: UserScope, record: Mapping[str, Any] | None = None) -> UserVectors:
        """Return the user's pair vectors and flags: the cached copy if still current, else from Chroma.

        `record` is the user's record when the caller has just read it (saves a read on a server).
        """
        revision = self._pairs_revision(scope, record)
        cached = self._vectors.get(scope.user_id, revision)
        if cached is not None:
            return cached
        rows = self._get(self._pairs, scope, documents=False, embeddings=True)
        stored = UserVectors(
            tuple(row.metadata["pair_id"] for row in rows),
            unit_rows(np.asarray([row.embedding for row in rows], dtype=np.float32)),
            np.array([row.metadata.get("default_judge_correct") is False for row in rows], dtype=bool),
            np.array([bool(row.metadata.get("has_verified_reasoning")) for row in rows], dtype=bool),
            np.array([row.metadata["created_us"] for row in rows], dtype=np.int64),
        )
        self._vectors.put(scope.user_id, revision, stored)
        return stored
