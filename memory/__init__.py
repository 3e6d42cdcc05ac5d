"""Everything persistent: each user's pairs, persona versions and demos in Chroma, and the embeddings.

`PreferenceStore` is the one class callers use (`memory.store`); its parts live beside it:
`memory.scope` (the collections seen one user at a time), `memory.pairs`, `memory.retrieval`,
`memory.personas`, `memory.leases` and `memory.shared_tastes` (the one record no user owns).
`make_client` builds the Chroma client it runs on (a local directory, a `chroma run` server, or
in memory) and `retrieval_embeddings` its embedding model.
"""

from memory.chroma import make_client
from memory.embeddings import MiniLMEmbeddings
from memory.leases import Lease
from memory.retrieval import retrieval_embeddings, retrieval_text
from memory.store import PairCounts, PreferenceStore

__all__ = [
    "Lease",
    "MiniLMEmbeddings",
    "PairCounts",
    "PreferenceStore",
    "make_client",
    "retrieval_embeddings",
    "retrieval_text",
]
