"""Unknown ``BACKSTAGE_AUTH_*`` settings and ``backend.auth`` keys warn at start-up."""

from __future__ import annotations

import logging
import typing as t

import pytest
from flask import Flask

from flask_backstage_auth import BackstageAuth
from flask_backstage_auth.auth.external.types import ExternalTokenHandler
from flask_backstage_auth.config.settings import DEFAULTS
from tests.conftest import new_secret

SECRET_VALUE = "s3cr3t-value-never-logged-0123456789"


def start(
    backstage: dict[str, t.Any], caplog: pytest.LogCaptureFixture, **settings: t.Any
) -> list[str]:
    """Start an app and return the config warnings it logged."""
    app = Flask("unknown-keys")
    app.config.update({"TESTING": True, "BACKSTAGE_CONFIG": backstage, **settings})
    with caplog.at_level(logging.WARNING, logger="flask_backstage_auth.config"):
        BackstageAuth(app)
    assert SECRET_VALUE not in caplog.text
    return [r.getMessage() for r in caplog.records if r.name == "flask_backstage_auth.config"]


def auth(**block: t.Any) -> dict[str, t.Any]:
    return {"backend": {"auth": block}}


def test_a_valid_configuration_warns_nothing(caplog: pytest.LogCaptureFixture) -> None:
    backstage = auth(
        keys=[{"secret": new_secret(), "accessRestrictions": [{"plugin": "catalog"}]}],
        externalAccess=[
            {
                "type": "static",
                "options": {"token": "a-static-token-for-tests", "subject": "ci"},
                "accessRestrictions": [
                    {"plugin": "catalog", "permission": "catalog.entity.read"},
                    {"plugin": "search", "permissionAttribute": {"action": "read"}},
                ],
            },
            {"type": "legacy", "options": {"secret": new_secret(), "subject": "old"}},
            {
                "type": "jwks",
                "options": {
                    "url": "https://idp.example/jwks.json",
                    "issuer": "https://idp.example",
                    "audience": "backstage",
                    "algorithm": "RS256",
                    "subjectPrefix": "idp",
                },
            },
        ],
        pluginKeyStore={"type": "database"},
        dangerouslyDisableDefaultAuthPolicy=False,
    )
    assert start(backstage, caplog, BACKSTAGE_AUTH_LEEWAY=1) == []


def test_a_misspelt_external_access_names_the_key(caplog: pytest.LogCaptureFixture) -> None:
    backstage = auth(
        externalAcess=[{"type": "static", "options": {"token": SECRET_VALUE, "subject": "x"}}]
    )
    assert start(backstage, caplog) == [
        "Unknown key 'externalAcess' in backend.auth, ignored; did you mean 'externalAccess'?"
    ]


def test_unknown_keys_in_entries_warn_with_their_path(caplog: pytest.LogCaptureFixture) -> None:
    backstage = auth(
        keys=[{"secret": new_secret(), "secert": SECRET_VALUE}],
        externalAccess=[
            {
                "type": "static",
                "options": {
                    "token": "a-static-token-for-tests",
                    "subjct": SECRET_VALUE,
                    "subject": "x",
                },
                "accessRestriction": [{"plugin": "catalog"}],
            },
        ],
    )
    assert start(backstage, caplog) == [
        "Unknown key 'secert' in backend.auth.keys[0], ignored; did you mean 'secret'?",
        "Unknown key 'accessRestriction' in backend.auth.externalAccess[0], ignored;"
        " did you mean 'accessRestrictions'?",
        "Unknown key 'subjct' in backend.auth.externalAccess[0].options, ignored;"
        " did you mean 'subject'?",
    ]


def test_a_key_near_nothing_lists_the_known_keys(caplog: pytest.LogCaptureFixture) -> None:
    assert start(auth(zzz=True), caplog) == [
        "Unknown key 'zzz' in backend.auth, ignored; known keys: keys, externalAccess,"
        " pluginKeyStore, dangerouslyDisableDefaultAuthPolicy"
    ]


def test_plugin_key_store_keys_are_checked(caplog: pytest.LogCaptureFixture) -> None:
    assert start(auth(pluginKeyStore={"type": "database", "statc": {}}), caplog) == [
        "Unknown key 'statc' in backend.auth.pluginKeyStore, ignored; did you mean 'static'?"
    ]


def test_a_long_key_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    long_key = "k" * 30 + SECRET_VALUE
    (message,) = start(auth(**{long_key: 1}), caplog)
    assert long_key[:61] + "..." in message and long_key not in message


def test_unknown_settings_name_the_nearest(caplog: pytest.LogCaptureFixture) -> None:
    messages = start(
        {},
        caplog,
        BACKSTAGE_AUTH_JWKS_TIMOUT=SECRET_VALUE,
        BACKSTAGE_AUTH_JSON_ERROR=True,
        BACKSTAGE_AUTH_WHATEVER=1,
        OTHER_EXTENSION_SETTING=1,  # not ours: never warned about
    )
    assert sorted(messages) == [
        "Unknown setting 'BACKSTAGE_AUTH_JSON_ERROR' in app.config, ignored;"
        " did you mean BACKSTAGE_AUTH_JSON_ERRORS?",
        "Unknown setting 'BACKSTAGE_AUTH_JWKS_TIMOUT' in app.config, ignored;"
        " did you mean BACKSTAGE_AUTH_JWKS_TIMEOUT?",
        "Unknown setting 'BACKSTAGE_AUTH_WHATEVER' in app.config, ignored; no such setting",
    ]


def test_every_default_is_a_known_setting(caplog: pytest.LogCaptureFixture) -> None:
    settings = {key: value for key, value in DEFAULTS.items() if value is not None}
    settings.pop("BACKSTAGE_AUTH_ACCEPT_MOCK_TOKENS")
    assert start({}, caplog, **settings) == []


def test_custom_external_access_options_are_the_handlers_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    custom = ExternalTokenHandler("custom", lambda options: None, lambda token, context: None)

    app = Flask("custom")
    app.config.update(
        {
            "TESTING": True,
            "BACKSTAGE_CONFIG": auth(
                externalAccess=[{"type": "custom", "options": {"anything": 1}, "tpye": "x"}]
            ),
        }
    )
    with caplog.at_level(logging.WARNING, logger="flask_backstage_auth.config"):
        BackstageAuth(app, external_token_handlers=[custom])
    messages = [r.getMessage() for r in caplog.records if r.name == "flask_backstage_auth.config"]
    assert messages == [
        "Unknown key 'tpye' in backend.auth.externalAccess[0], ignored; did you mean 'type'?"
    ]
