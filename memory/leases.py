"""One holder at a time of a user's activity across processes: `Leases`, the lease part of the store.

`acquire_lease` claims the next number of the user's lease records (``{user}/lease/{name}/{n}``
in the users collection) the way a persona version is claimed (`memory.personas`), but only while
the highest record is released or past its expiry; a holder renews it (`renew_lease`) while it
works and releases it at the end. A lease not renewed for ``lease_s`` (a crashed holder's) counts
as over, as stale version claims do after ``stale_write_s``: every store sharing the collections
must use the same ``lease_s``, and the processes' clocks must agree to well under it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memory.scope import Row, ScopedStore, UserScope, placeholder_vectors


@dataclass(frozen=True)
class Lease:
    """A held lease on one of a user's activities (``name``, e.g. "synthesis"), until released."""

    user_id: str
    name: str
    number: int
    token: str

    def as_dict(self) -> dict[str, str | int]:
        """Return the lease as JSON-plain values (graph state holds it so)."""
        return {"user_id": self.user_id, "name": self.name, "number": self.number, "token": self.token}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lease:
        """Rebuild a lease from `as_dict`'s values."""
        return cls(str(data["user_id"]), str(data["name"]), int(data["number"]), str(data["token"]))


class Leases(ScopedStore):
    """Acquire, renew and release a user's leases (one synthesis of a user at a time)."""

    def _lease_rows(self, scope: UserScope, name: str) -> list[Row]:
        rows = self._get(self._users, scope, documents=False, lease=name)
        return sorted(rows, key=lambda row: int(row.metadata["number"]))

    def acquire_lease(self, user_id: str, name: str = "synthesis") -> Lease | None:
        """Take the user's lease `name`; None while another holder has it (renewed within `lease_s`)."""
        scope = self._scope(user_id)
        rows = self._lease_rows(scope, name)
        now = time.time_ns() // 1_000
        latest = rows[-1].metadata if rows else None
        live_since = now - int(self.lease_s * 1_000_000)
        if latest and not latest.get("released") and int(latest["renewed_us"]) > live_since:
            return None
        number = int(latest["number"]) + 1 if latest else 1
        lease = Lease(scope.user_id, name, number, uuid.uuid4().hex)
        key = f"lease/{name}/{number:010d}"
        self._users.add(  # ignored when another process claimed this number first
            ids=[scope.record_id(key)],
            embeddings=placeholder_vectors(1),
            metadatas=[
                {
                    "user_id": scope.user_id,
                    "lease": name,
                    "number": number,
                    "token": lease.token,
                    "renewed_us": now,
                    "released": False,
                }
            ],
        )
        winner = self._get(self._users, scope, keys=[key], documents=False)
        if not winner or winner[0].metadata.get("token") != lease.token:
            return None
        self._delete_ids(self._users, [row.id for row in rows])  # earlier leases, all over
        return lease

    def renew_lease(self, lease: Lease) -> bool:
        """Mark a held lease renewed now; False when it was released or taken over."""
        scope = self._scope(lease.user_id)
        rows = self._lease_rows(scope, lease.name)
        if not rows:
            return False
        latest = rows[-1].metadata
        if latest.get("token") != lease.token or latest.get("released"):
            return False
        self._users.update(ids=[rows[-1].id], metadatas=[{"renewed_us": time.time_ns() // 1_000}])
        return True

    def release_lease(self, lease: Lease) -> None:
        """Give a held lease back so the next holder need not wait for its expiry."""
        scope = self._scope(lease.user_id)
        key = f"lease/{lease.name}/{lease.number:010d}"
        rows = self._get(self._users, scope, keys=[key], documents=False)
        if rows and rows[0].metadata.get("token") == lease.token:
            self._users.update(ids=[rows[0].id], metadatas=[{"released": True}])
