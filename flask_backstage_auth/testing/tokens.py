"""Real tables and real tokens for a test app, made by the library's own components.

Unlike mock tokens, these are what production sees: a user token signed by the
app's :class:`~flask_backstage_auth.auth_backend.extension.AuthBackend`, an
access token created by the ``access-tokens`` service (its digest stored, its
scopes checked), tables made by the library's Alembic branch. They need no
``TESTING`` or ``BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS``::

    create_backstage_tables(app)
    token = issue_access_token(app, scopes=["catalog:read"])
    client.get("/api/catalog/entities", headers=bearer_header(token))

The pytest plugin exposes them as fixtures (``backstage_tables``,
``backstage_user_token``, ``backstage_access_token``).
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

__all__ = [
    "DEFAULT_TEST_GROUP",
    "DEFAULT_TEST_USER",
    "create_backstage_tables",
    "issue_access_token",
    "issue_user_token",
]

#: The user of :func:`issue_user_token` by default.
DEFAULT_TEST_USER = "user:default/test"
#: The owner of :func:`issue_access_token`'s service tokens by default.
DEFAULT_TEST_GROUP = "group:default/test"


def create_backstage_tables(app: Flask) -> None:
    """Apply the library's migrations to the database ``BackstageAuth`` uses on ``app``.

    What ``flask backstage-auth db upgrade`` does; safe to call again.

    :raises RuntimeError: ``BackstageAuth`` is not on ``app``, or has no database.
    """
    from flask_backstage_auth.db.cli import upgrade_database
    from flask_backstage_auth.extension import BackstageAuth

    database = BackstageAuth.state(app).database
    if database is None:
        raise RuntimeError(
            "BackstageAuth has no database on this app: give it a Flask-SQLAlchemy db"
            " or set BACKSTAGE_AUTH_DATABASE_URI"
        )
    with app.app_context():
        upgrade_database(database.engine)


def issue_user_token(
    app: Flask,
    user_entity_ref: str = DEFAULT_TEST_USER,
    ownership_entity_refs: t.Sequence[str] | None = None,
) -> str:
    """A user token for ``user_entity_ref``, signed by the app's ``AuthBackend``.

    With a database, the signing key is published there: its tables must
    exist (:func:`create_backstage_tables`).

    :param ownership_entity_refs: the ``ent`` claim (default: the user alone).
    :raises RuntimeError: ``AuthBackend`` is not on ``app``.
    :raises StorageUnavailable: the tables are missing.
    """
    from flask_backstage_auth.auth_backend.extension import AuthBackend

    ent = [user_entity_ref] if ownership_entity_refs is None else list(ownership_entity_refs)
    return AuthBackend.state(app).issuer.issue_token(user_entity_ref, ent).token


def issue_access_token(
    app: Flask,
    *,
    scopes: t.Sequence[str],
    kind: t.Literal["service", "personal"] = "service",
    owner_ref: str | None = None,
    name: str = "pytest",
    expires_in: float = 3600,
) -> str:
    """A new access token (``bsat_``/``bspat_``), created by the app's token service.

    The tables must exist (:func:`create_backstage_tables`). No permission is
    checked: the token is created as by ``flask backstage-auth tokens create``.

    :param scopes: ids from the app's scope catalogue (``catalog:read``...).
    :param owner_ref: default: :data:`DEFAULT_TEST_GROUP` for a service token,
        :data:`DEFAULT_TEST_USER` for a personal one.
    :raises InputError: an unknown scope.
    :raises RuntimeError: ``AccessTokens`` is not on ``app``.
    """
    from flask_backstage_auth.access_tokens.extension import AccessTokens
    from flask_backstage_auth.access_tokens.service import Operator

    service = AccessTokens.state(app).service
    if owner_ref is None:
        owner_ref = DEFAULT_TEST_GROUP if kind == "service" else DEFAULT_TEST_USER
    with app.app_context():
        issued = service.create(
            Operator("pytest"),
            kind,
            name=name,
            description="Made by flask_backstage_auth.testing",
            owner_ref=owner_ref,
            scopes=service.check_scopes(list(scopes)),
            expires_at=service.now() + expires_in,
        )
    return issued.secret
