"""Where the deployment's shared tastes are kept: `SharedTasteRecords`, a part of the store.

The shared tastes (`agent.shared_tastes.SharedTastes`) are one record of the users collection,
beside the users' own records but owned by none of them (its id, ``~shared/tastes``, is no
user's: user ids cannot hold ``~`` or ``/``). Its metadata carries a revision renewed on every
write, so a process reads the document again only after someone changed it; every process of a
deployment, and every replica on a Chroma server, reads the same record.

`persona-agent memory learn-tastes` writes it from every stored user's pairs. Deleting a user
takes their posterior out of it at once; exporting a user includes it (importing does not: it
is learnt again).
"""

from __future__ import annotations

import json
import logging
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.errors import ConfigurationError
from agent.features import FEATURES_VERSION
from agent.shared_tastes import SharedTastes
from agent.taste import kind_label
from memory.chroma import read_retrying
from memory.scope import ScopedStore, placeholder_vectors

if TYPE_CHECKING:
    from agent.reward_model import RewardModel

logger = logging.getLogger(__name__)

_ID = "~shared/tastes"
_KIND = "shared_tastes"


class SharedTasteRecords(ScopedStore):
    """Read and write the deployment's shared tastes; list the users the store knows."""

    _shared_cache: tuple[str, SharedTastes] | None = None
    _warned: frozenset[str] = frozenset()

    def user_ids(self) -> list[str]:
        """Return every user with a record in the store, sorted."""
        users: set[str] = set()
        offset = 0
        while True:
            page = read_retrying(
                partial(self._users.get, include=["metadatas"], limit=self._batch, offset=offset)
            )
            users |= {str(m["user_id"]) for m in page.get("metadatas") or [] if m and m.get("user_id")}
            if len(page["ids"]) < self._batch:
                return sorted(users)
            offset += self._batch

    def _shared_row(self, *, documents: bool) -> tuple[str, str] | None:
        """Return the shared record's revision and (with `documents`) its document, or None."""
        include: list[Any] = ["metadatas", "documents"] if documents else ["metadatas"]
        found = read_retrying(lambda: self._users.get(ids=[_ID], include=include))
        if not found["ids"]:
            return None
        metadata = (found.get("metadatas") or [{}])[0] or {}
        document = ((found.get("documents") or [""])[0] or "") if documents else ""
        return str(metadata.get("revision", "")), document

    def shared_tastes(self) -> SharedTastes | None:
        """Return the stored shared tastes, or None when none were learnt.

        Raises `ConfigurationError` when the record cannot be read as shared tastes.
        """
        head = self._shared_row(documents=False)
        if head is None:
            self._shared_cache = None
            return None
        cached = self._shared_cache
        if cached is not None and cached[0] == head[0]:
            return cached[1]
        row = self._shared_row(documents=True)
        if row is None:
            return None
        try:
            data = json.loads(row[1])
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"the stored shared tastes are not JSON: {error}") from error
        tastes = SharedTastes.from_json(data, source="the stored shared tastes")
        self._shared_cache = (row[0], tastes)
        return tastes

    def save_shared_tastes(self, tastes: SharedTastes) -> None:
        """Replace the stored shared tastes (one write: readers see the old or the new, never a mix)."""
        revision = uuid.uuid4().hex
        self._users.upsert(
            ids=[_ID],
            embeddings=placeholder_vectors(1),
            documents=[json.dumps(tastes.to_json())],
            metadatas=[{"kind": _KIND, "revision": revision, "n_users": tastes.n_users}],
        )
        self._shared_cache = (revision, tastes)

    def keep_shared_tastes_of(self, tastes: SharedTastes) -> SharedTastes:
        """Return `tastes` without the users the store no longer holds (deleted while they were learnt)."""
        return tastes.without(*(set(tastes.posteriors) - set(self.user_ids())))

    def _shared_taste_of(self, user_id: str) -> dict[str, Any] | None:
        """Return what the shared tastes hold about `user_id` (an export's record), or None."""
        try:
            tastes = self.shared_tastes()
        except ConfigurationError:
            return None
        if tastes is None or user_id not in tastes.posteriors:
            return None
        posterior = tastes.posteriors[user_id]
        return {
            "features_version": tastes.features_version,
            "posterior": [round(float(value), 6) for value in posterior],
            "tastes": [
                {"taste": kind_label(int(k)), "probability": round(float(posterior[k]), 4)}
                for k in np.flatnonzero(posterior >= 0.01)
            ],
        }

    def _forget_shared_taste(self, user_id: str) -> None:
        """Take `user_id`'s posterior out of the shared tastes, if it is there."""
        try:
            tastes = self.shared_tastes()
        except ConfigurationError as error:
            # it may name the user, and it cannot be used anyway: learning again writes a new one
            logger.warning("deleted the unreadable shared tastes with user %s: %s", user_id, error)
            self._users.delete(ids=[_ID])
            self._shared_cache = None
            return
        if tastes is not None and user_id in tastes.posteriors:
            self.save_shared_tastes(tastes.without(user_id))

    def usable_shared_tastes(self) -> SharedTastes | None:
        """Return the stored shared tastes a fit may use.

        None (every user fitted with the prior's own masses) when none were learnt, when they were
        learnt with features of another version, or when the record cannot be read (logged once
        per process: `persona-agent memory learn-tastes` writes a current one); a user's
        judgement never fails on it.
        """
        try:
            tastes = self.shared_tastes()
        except ConfigurationError as error:
            self._warn_once(f"the shared tastes are ignored: {error}")
            return None
        if tastes is not None and not tastes.current:
            self._warn_once(
                f"the shared tastes were learnt with features version {tastes.features_version}, "
                f"not {FEATURES_VERSION}: ignored until `persona-agent memory learn-tastes` learns them again"
            )
            return None
        return tastes

    def taste_masses(self, user_id: str, prior: RewardModel) -> np.ndarray | None:
        """Return the prior masses of `user_id`'s kinds of departure, learnt from the other users
        (None: the prior's own, as `usable_shared_tastes` says when)."""
        tastes = self.usable_shared_tastes()
        return tastes.masses_for(user_id, prior) if tastes is not None else None

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned = self._warned | {message}
            logger.warning("%s", message)
