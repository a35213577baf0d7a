"""Where the auth backend remembers each signed-in user's claims (Backstage's ``UserInfoDatabase``).

Every sign-in stores ``{"claims": {"sub": ..., "ent": [...], ...custom}}``
under the user entity ref, whether or not the issued token carries ``ent``;
``GET /v1/userinfo`` serves it back. With a database it is the
``backstage_auth_user_info`` table
(:class:`~flask_backstage_auth.db.user_info_store.SqlUserInfoStore`),
shared by every instance; without one, :class:`InMemoryUserInfoStore` keeps it
in this process only.
"""

from __future__ import annotations

import copy
import threading
import typing as t

#: The most users an in-memory store remembers; the oldest sign-in goes first.
DEFAULT_MAX_USERS = 100_000


class UserInfoStore(t.Protocol):
    """Backstage's ``UserInfoDatabase``: the last claims a user was signed in with."""

    def add_user_info(self, user_info: t.Mapping[str, t.Any]) -> None:
        """Store (or replace) ``{"claims": {"sub": ..., ...}}`` under its ``sub``."""

    def get_user_info(self, user_entity_ref: str) -> dict[str, t.Any] | None:
        """What was stored for ``user_entity_ref``, ``None`` when nothing was."""


class InMemoryUserInfoStore:
    """A :class:`UserInfoStore` in this process, bounded to ``max_users`` entries."""

    def __init__(self, *, max_users: int = DEFAULT_MAX_USERS) -> None:
        self.max_users = max_users
        self._entries: dict[str, dict[str, t.Any]] = {}
        self._lock = threading.Lock()

    def add_user_info(self, user_info: t.Mapping[str, t.Any]) -> None:
        sub = user_info["claims"]["sub"]
        value = copy.deepcopy(dict(user_info))
        with self._lock:
            self._entries.pop(sub, None)  # re-inserted last: the newest sign-in
            while self._entries and len(self._entries) >= self.max_users:
                self._entries.pop(next(iter(self._entries)))
            self._entries[sub] = value

    def get_user_info(self, user_entity_ref: str) -> dict[str, t.Any] | None:
        with self._lock:
            value = self._entries.get(user_entity_ref)
        return copy.deepcopy(value) if value is not None else None
