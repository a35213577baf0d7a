"""The public API: about twenty names at the root, the rest at documented places."""

from __future__ import annotations

import importlib.metadata

import flask_backstage_auth


def test_the_root_holds_about_twenty_names() -> None:
    assert 18 <= len(flask_backstage_auth.__all__) <= 24
    for name in flask_backstage_auth.__all__:
        assert getattr(flask_backstage_auth, name) is not None


def test_version_is_the_distributions() -> None:
    assert flask_backstage_auth.__version__ == importlib.metadata.version("flask-backstage-auth")


def test_access_tokens_from_the_root_and_its_package() -> None:
    from flask_backstage_auth.access_tokens import AccessTokens
    from flask_backstage_auth.access_tokens.extension import AccessTokens as Defined

    assert flask_backstage_auth.AccessTokens is AccessTokens is Defined


def test_documented_places() -> None:
    from flask_backstage_auth.config import ConfigReader, load_app_config
    from flask_backstage_auth.db import upgrade_database
    from flask_backstage_auth.db.cli import upgrade_database as defined
    from flask_backstage_auth.permissions import ALLOW, DENY, AuthorizeResult
    from flask_backstage_auth.testing import MockCredentials

    assert ALLOW.result is AuthorizeResult.ALLOW and DENY.result is AuthorizeResult.DENY
    assert upgrade_database is defined
    assert callable(load_app_config) and ConfigReader and MockCredentials


def test_unknown_names_raise_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError):
        flask_backstage_auth.NoSuchThing  # noqa: B018
    with pytest.raises(AttributeError):
        import flask_backstage_auth.db as db

        db.no_such_thing  # noqa: B018
