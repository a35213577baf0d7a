"""Audit events: each one with Backstage's fields, through HTTP with real tokens;
the access tokens' audit table written from the same events; the bound on
events a caller can cause; never a token in any of it."""

from __future__ import annotations

import json
import logging
import typing as t

import pytest
from flask import Blueprint, Flask, jsonify

from flask_backstage_auth import AuthBackend, BackstageAuth, get_credentials
from flask_backstage_auth.access_tokens.audit import ROWS
from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.access_tokens.format import DISPLAY_PREFIX_LENGTH
from flask_backstage_auth.access_tokens.service import LEAK_ACTOR, LEAK_REASON
from flask_backstage_auth.audit import AUDIT_LOGGER_NAME, AuditJsonFormatter, RootAuditor
from flask_backstage_auth.audit.budget import RefusalBudget
from flask_backstage_auth.auth.plugin.handler import PluginTokenHandler
from flask_backstage_auth.credentials import AccessRestrictions, Credentials, UserPrincipal
from flask_backstage_auth.errors import AuthenticationError, ConfigError
from flask_backstage_auth.permissions import (
    DenyAllPolicy,
    PermissionsService,
    create_permission,
)
from flask_backstage_auth.testing.audit import AuditCapture, capture_audit
from tests.access_token_app import ALICE, TEAM, Clock, bearer, build, user_token
from tests.test_access_tokens_usage import MakeApp, database_uri, make_app  # noqa: F401

SERVICE = "/api/access-tokens/service"
CATALOG = "/api/catalog/entities"
CLIENT_IP = "192.0.2.7"


def windows(secret: str, size: int = 16) -> t.Iterator[str]:
    """Every ``size``-character slice of ``secret`` (a display prefix is 12)."""
    for start in range(0, max(1, len(secret) - size + 1)):
        yield secret[start : start + size]


def assert_no_secret(text: str, secrets: t.Iterable[str]) -> None:
    for secret in secrets:
        for piece in windows(secret):
            assert piece not in text, f"a piece of a secret is in the output: {piece!r}"


def records_json(audit: AuditCapture) -> str:
    return json.dumps([r.to_dict() for r in audit.records])


def create_token(
    app: Flask, name: str = "ci", scopes: t.Sequence[str] = ("catalog:read",)
) -> t.Any:
    response = app.test_client().post(
        f"{SERVICE}/",
        json={"name": name, "groupEntityRef": TEAM, "scopes": list(scopes)},
        headers=bearer(user_token(app)),
        environ_base={"REMOTE_ADDR": CLIENT_IP},
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def use(app: Flask, token: str) -> int:
    return app.test_client().get(CATALOG, headers=bearer(token)).status_code


# -- the access-token events, through HTTP ---------------------------------------


def test_every_token_event_has_backstages_fields_and_never_the_token() -> None:
    clock = Clock()
    app = build(clock)
    client = app.test_client()
    admin = bearer(user_token(app))
    with capture_audit(app) as audit:
        created = create_token(app)
        raw, token_id = created["rawToken"], created["token"]["id"]

        initiated, succeeded = audit.find("access-token-create")
        assert (initiated.status, succeeded.status) == ("initiated", "succeeded")
        event = succeeded.to_dict()
        assert event["isAuditEvent"] is True
        assert event["plugin"] == "access-tokens"
        assert event["severityLevel"] == "high"
        assert event["actor"] == {
            "actorId": ALICE,
            "ip": CLIENT_IP,
            "hostname": "localhost",
            "userAgent": event["actor"]["userAgent"],
        }
        assert event["actor"]["userAgent"].startswith("Werkzeug/")
        assert event["request"] == {"url": f"{SERVICE}/", "method": "POST"}
        assert event["meta"]["tokenId"] == token_id
        assert event["meta"]["scopes"] == ["catalog:read"] and event["meta"]["ownerRef"] == TEAM
        assert event["meta"]["tokenPrefix"] == raw[:DISPLAY_PREFIX_LENGTH]
        assert "tokenId" not in initiated.meta  # not known yet when it started

        assert use(app, raw) == 200
        clock.now += 600  # past the verification cache and the last-used interval
        assert use(app, raw) == 200
        (first,) = audit.find("access-token-first-use", status="succeeded")
        assert first.actor["actorId"] == f"access-token:{TEAM}:ci"
        assert first.meta["tokenId"] == token_id and first.request == {
            "url": CATALOG,
            "method": "GET",
        }

        rotated = client.post(
            f"{SERVICE}/{token_id}/rotate", json={"graceSeconds": 60}, headers=admin
        )
        new_raw = rotated.get_json()["rawToken"]
        assert use(app, raw) == 200  # the old secret, in its grace
        (old_use,) = audit.find("access-token-old-secret-use", status="succeeded")
        assert old_use.meta["tokenId"] == token_id
        (rotation,) = audit.find("access-token-rotate", status="succeeded")
        assert rotation.meta["graceUntil"] == clock() + 60
        assert rotation.meta["tokenPrefix"] == new_raw[:DISPLAY_PREFIX_LENGTH]

        patched = client.patch(f"{SERVICE}/{token_id}", json={"description": "x"}, headers=admin)
        assert patched.status_code == 200
        (update,) = audit.find("access-token-update", status="succeeded")
        assert update.severity_level == "medium" and update.meta["description"] is True

        revoked = client.delete(f"{SERVICE}/{token_id}", json={"reason": "done"}, headers=admin)
        assert revoked.status_code == 204
        (revoke,) = audit.find("access-token-revoke", status="succeeded")
        assert revoke.meta == {
            "kind": "service",
            "tokenId": token_id,
            "reason": "done",
            "tokenVersion": 4,  # created 1, rotated 2, patched 3, revoked 4
        }

        assert use(app, new_raw) == 401
        (failed_use,) = audit.find("access-token-failed-use", status="failed")
        assert failed_use.meta["reason"] == "revoked"
        assert failed_use.error == {
            "name": "AuthenticationError",
            "message": "Access token refused: revoked",
        }
        assert failed_use.actor["actorId"] is None

        # A leak report: one event for the report, one revocation per token.
        leaked = create_token(app, "leaked")
        report = client.post(f"{SERVICE}/revoke", json={"tokens": [leaked["rawToken"], "junk"]})
        assert report.get_json() == {"revoked": 1}
        (leak,) = audit.find("access-token-leak-report", status="succeeded")
        assert leak.severity_level == "critical"
        assert leak.meta == {"reported": 2, "revoked": [leaked["token"]["id"]]}
        assert leak.actor["actorId"] == LEAK_ACTOR
        revocation = audit.find("access-token-revoke", status="succeeded")[-1]
        assert revocation.meta["reason"] == LEAK_REASON
        assert revocation.actor["actorId"] == LEAK_ACTOR

    assert_no_secret(records_json(audit), [raw, new_raw, leaked["rawToken"]])
    assert_no_secret(records_json(audit), [user_token(app)])


def test_a_refused_change_is_a_failed_event() -> None:
    app = build()
    create_token(app)
    with capture_audit(app) as audit:
        response = app.test_client().post(
            f"{SERVICE}/",
            json={"name": "ci", "groupEntityRef": TEAM, "scopes": ["catalog:read"]},
            headers=bearer(user_token(app)),
        )
        assert response.status_code == 409
    initiated, failed = audit.find("access-token-create")
    assert (initiated.status, failed.status) == ("initiated", "failed")
    assert failed.error == {
        "name": "ConflictError",
        "message": f"A token named 'ci' already exists for {TEAM}",
    }


# make_app: on a SQLite file and on PostgreSQL, where uses are written in the background.
def test_the_audit_table_rows_are_the_events(make_app: MakeApp) -> None:  # noqa: F811
    app = make_app()
    clock = t.cast(Clock, BackstageAuth.state(app).clock)
    client = app.test_client()
    admin = bearer(user_token(app))
    store = AccessTokens.state(app).store
    with capture_audit(app) as audit:
        created = create_token(app)
        raw, token_id = created["rawToken"], created["token"]["id"]
        with app.app_context():  # a change's row is written at once, in the request
            assert [e.event for e in store.events(token_id)] == ["created"]
        assert use(app, raw) == 200
        clock.now += 1
        rotated = client.post(
            f"{SERVICE}/{token_id}/rotate", json={"graceSeconds": 60}, headers=admin
        )
        new_raw = rotated.get_json()["rawToken"]
        assert use(app, raw) == 200
        clock.now += 1
        client.patch(f"{SERVICE}/{token_id}", json={"scopes": []}, headers=admin)  # refused
        client.patch(f"{SERVICE}/{token_id}", json={"description": "d"}, headers=admin)
        client.post(f"{SERVICE}/{token_id}/revoke", json={"reason": "r"}, headers=admin)
        clock.now += 1
        assert use(app, new_raw) == 401
    rows = client.get(f"{SERVICE}/{token_id}/audit", headers=admin).get_json()["events"]
    expected = [
        (ROWS[r.event_id].name, None if ROWS[r.event_id].use else r.actor["actorId"])
        for r in audit.records
        if r.event_id in ROWS and ROWS[r.event_id].status == r.status
    ]
    assert [(row["event"], row["actor"]) for row in reversed(rows)] == expected
    assert [row["event"] for row in reversed(rows)] == [
        "created",
        "first_used",
        "rotated",
        "old_secret_used",
        "updated",
        "revoked",
        "failed_use",
    ]
    failed = rows[0]
    assert failed["metadata"] == {"reason": "revoked", "ip": "127.0.0.1"}


def test_the_cli_is_audited_under_its_name() -> None:
    from flask_backstage_auth.access_tokens.cli import tokens_group

    app = build()
    app.cli.add_command(tokens_group)
    with capture_audit(app) as audit:
        result = app.test_cli_runner().invoke(
            args=[
                "tokens",
                "create",
                "--name",
                "ci",
                "--group",
                "team-a",
                "--scope",
                "catalog:read",
            ]
        )
        assert result.exit_code == 0, result.output
    (event,) = audit.find("access-token-create", status="succeeded")
    assert event.actor == {"actorId": "cli", "ip": None, "hostname": None, "userAgent": None}
    assert event.request is None
    assert_no_secret(records_json(audit), [result.stdout.strip()])


# -- refusals, and their bound ------------------------------------------------------


def test_a_refused_request_names_the_reason_once_and_never_the_token() -> None:
    app = build()
    bogus = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLW9mLWEtZm9yZ2VyeQ"
    with capture_audit(app) as audit:
        client = app.test_client()
        assert client.get(CATALOG).status_code == 401
        assert client.get(CATALOG, headers=bearer(bogus)).status_code == 401
    missing, illegal = audit.find("auth-refused", status="failed")
    assert missing.plugin == "catalog"
    assert missing.error == {"name": "AuthenticationError", "message": "Missing credentials"}
    assert missing.meta == {"status": 401, "credentialsFrom": "none"}
    assert missing.request == {"url": CATALOG, "method": "GET"}
    assert illegal.meta["credentialsFrom"] == "header"
    assert illegal.error is not None and illegal.error["name"] == "AuthenticationError"
    assert len(audit.find("auth-refused")) == 4  # each initiated, then failed: once per request
    assert_no_secret(records_json(audit), [bogus])


def test_a_token_in_a_handlers_message_is_cut_out() -> None:
    app = build()
    leaky = "leaky-handler-token-0123456789abcdef"

    def handler(token: t.Any) -> None:
        if token.token == leaky:
            raise AuthenticationError(f"Token {token.token} is not welcome")

    BackstageAuth.register_token_handler(handler, stage="first-party", app=app)
    with capture_audit(app) as audit:
        assert app.test_client().get(CATALOG, headers=bearer(leaky)).status_code == 401
    (refused,) = audit.find("auth-refused", status="failed")
    assert refused.error == {
        "name": "AuthenticationError",
        "message": "Token [REDACTED] is not welcome",
    }
    assert leaky not in records_json(audit)


def test_a_restricted_token_elsewhere_is_a_403_refusal() -> None:
    app = build()
    raw = create_token(app)["rawToken"]  # catalog:read only
    with capture_audit(app) as audit:
        response = app.test_client().get(f"{SERVICE}/", headers=bearer(raw))
        assert response.status_code == 403
    (refused,) = audit.find("auth-refused", status="failed")
    assert refused.plugin == "access-tokens" and refused.meta["status"] == 403
    assert refused.error is not None and refused.error["name"] == "NotAllowedError"


def test_a_flood_of_refusals_is_bounded_and_counted() -> None:
    clock = Clock()
    app = build(clock)
    budget = BackstageAuth.state(app).auditor.budget
    with capture_audit(app) as audit:
        client = app.test_client()
        for _ in range(500):  # one client
            client.get(CATALOG, environ_base={"REMOTE_ADDR": "198.51.100.1"})
        assert len(audit.find("auth-refused", status="failed")) == 10  # its share
        assert budget.suppressed == 490
        for index in range(500):  # many clients
            client.get(CATALOG, environ_base={"REMOTE_ADDR": f"10.0.{index // 250}.{index % 250}"})
        refused = audit.find("auth-refused", status="failed")
        assert len(refused) == 100  # the total
        assert refused[10].meta["suppressed"] == 490  # the next one logged says so
        assert budget.suppressed == 410
        clock.now += 61
        client.get(CATALOG)
    last = audit.find("auth-refused", status="failed")[-1]
    assert last.meta["suppressed"] == 410
    assert budget.suppressed == 0
    assert len(audit.records) == 2 * 101


def test_the_budget_counts_per_source_and_in_all() -> None:
    clock = Clock(0)
    budget = RefusalBudget(total=5, per_source=2, window=10, max_sources=3, clock=clock)
    assert [budget.admit("a")[0] for _ in range(3)] == [True, True, False]
    assert [budget.admit(f"s{i}")[0] for i in range(4)] == [True, True, True, False]
    assert budget.suppressed == 1  # the first s0 reported a's refused one
    clock.now = 10
    assert budget.admit("a") == (True, 1)


# -- permissions ---------------------------------------------------------------------


READ = create_permission("catalog.entity.read", {"action": "read"})


def test_a_denied_permission_is_audited_with_who_and_why() -> None:
    audit = AuditCapture()
    restricted = Credentials(
        UserPrincipal(ALICE, access_restrictions=AccessRestrictions(permission_names=("other",)))
    )
    service = PermissionsService(enabled=False, policy=None)
    service.auditor = audit.auditor("catalog")
    assert service.authorize(Credentials(UserPrincipal(ALICE)), READ).result.value == "ALLOW"
    assert audit.records == []
    service.authorize(restricted, READ, resource_ref="component:default/x")
    (_, denied) = audit.find("permission-denied")
    assert denied.status == "failed" and denied.actor["actorId"] == ALICE
    assert denied.meta == {
        "permission": "catalog.entity.read",
        "resourceRef": "component:default/x",
        "deniedBy": "access-restrictions",
    }
    assert denied.error == {"name": "Error", "message": "Permission denied: catalog.entity.read"}

    policy = PermissionsService(enabled=True, policy=DenyAllPolicy())
    policy.auditor = service.auditor
    policy.authorize(Credentials(UserPrincipal(ALICE)), READ)
    assert audit.find("permission-denied", status="failed")[-1].meta["deniedBy"] == "policy"


def test_denied_permissions_through_http_are_bounded() -> None:
    app = Flask(__name__)
    app.config.update(
        BACKSTAGE_AUTH_DEVELOPMENT=False,
        BACKSTAGE_CONFIG={
            "backend": {"auth": {"keys": [{"secret": "s" * 32}]}},
            "permission": {"enabled": True},
        },
    )
    auth = BackstageAuth(app, permission_policy=DenyAllPolicy())
    bp = Blueprint("catalog", __name__, url_prefix="/api/catalog")

    @bp.get("/entities")
    def entities() -> t.Any:
        auth.permissions.require(get_credentials(), READ)
        return jsonify([])

    app.register_blueprint(bp)
    with app.app_context():
        token = auth.token_manager.get_token().token
    with capture_audit(app) as audit:
        for _ in range(30):
            assert app.test_client().get(CATALOG, headers=bearer(token)).status_code == 403
    denied = audit.find("permission-denied", status="failed")
    assert len(denied) == 10  # one actor's share of the window
    assert denied[0].actor["actorId"] == "external:backstage-plugin"
    assert denied[0].request == {"url": CATALOG, "method": "GET"}


# -- start-up and keys -----------------------------------------------------------------


def audit_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, t.Any]]:
    return [r.audit for r in caplog.records if r.name == AUDIT_LOGGER_NAME]  # type: ignore[attr-defined]


def test_turning_the_default_policy_off_is_a_critical_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=AUDIT_LOGGER_NAME)
    app = Flask(__name__)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {"auth": {"dangerouslyDisableDefaultAuthPolicy": True}}
    }
    BackstageAuth(app)
    events = [e for e in audit_records(caplog) if e["eventId"] == "default-policy-disabled"]
    assert [e["status"] for e in events] == ["initiated", "succeeded"]
    assert events[1]["severityLevel"] == "critical" and events[1]["plugin"] == "app"
    assert events[1]["meta"] == {"config": "backend.auth.dangerouslyDisableDefaultAuthPolicy"}
    assert events[1]["actor"]["actorId"] == "plugin:app"


def test_no_such_event_while_the_policy_is_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=AUDIT_LOGGER_NAME)
    BackstageAuth(Flask(__name__))
    assert [e for e in audit_records(caplog) if e["eventId"] == "default-policy-disabled"] == []


def test_every_new_signing_key_is_audited() -> None:
    clock = Clock()
    app = build(clock)
    with capture_audit(app) as audit:
        state = BackstageAuth.state(app)
        handler: PluginTokenHandler = state.plugin_tokens
        handler.issue_token(plugin_id="search", target_plugin_id="catalog")
        clock.now += 3601  # the key's hour is over
        handler.issue_token(plugin_id="search", target_plugin_id="catalog")
        user_token(app)
    plugin_keys = audit.find("signing-key-rotate", status="succeeded", plugin="app")
    assert len(plugin_keys) == 2
    first, second = (r.meta for r in plugin_keys)
    assert first["purpose"] == "plugin-tokens" and first["previousKid"] is None
    assert second["previousKid"] == first["kid"] != second["kid"]
    assert second["publicKeyExpiresAt"] == clock() + 3 * 3600
    (user_keys,) = audit.find("signing-key-rotate", status="succeeded", plugin="auth")
    assert user_keys.meta["purpose"] == "user-tokens"
    assert (
        AuthBackend.state(app).issuer.key_source.list_public_keys()[0]["kid"]
        == user_keys.meta["kid"]
    )


# -- the logger, its levels and its format ------------------------------------------------


def test_records_go_to_the_audit_logger_at_their_severitys_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=AUDIT_LOGGER_NAME)
    root = RootAuditor()
    auditor = root.for_plugin("catalog")
    auditor.create_event("entity-fetch").success()
    auditor.create_event("entity-delete", severity="high").fail(ValueError("boom"))
    levels = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == AUDIT_LOGGER_NAME]
    assert (
        levels
        == [(logging.DEBUG, "catalog.entity-fetch")] * 2
        + [(logging.INFO, "catalog.entity-delete")] * 2
    )
    line = json.loads(AuditJsonFormatter().format(caplog.records[-1]))
    assert line["message"] == "catalog.entity-delete" and line["level"] == "info"
    assert line["error"] == {"name": "ValueError", "message": "boom"}
    assert line["status"] == "failed" and line["isAuditEvent"] is True
    assert line["actor"]["actorId"] == "plugin:catalog"
    assert line["timestamp"].endswith("Z")


def test_the_levels_come_from_backstages_config() -> None:
    app = Flask(__name__)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {"auditor": {"severityLogLevelMappings": {"low": "info", "critical": "error"}}}
    }
    levels = BackstageAuth(app).state(app).auditor.levels
    assert levels == {
        "low": logging.INFO,
        "medium": logging.INFO,
        "high": logging.INFO,
        "critical": logging.ERROR,
    }
    bad = Flask(__name__)
    bad.config["BACKSTAGE_CONFIG"] = {
        "backend": {"auditor": {"severityLogLevelMappings": {"low": "loud"}}}
    }
    with pytest.raises(ConfigError) as raised:
        BackstageAuth(bad)
    assert str(raised.value) == (
        "The configuration value for 'backend.auditor.severityLogLevelMappings.low' was given"
        " an invalid value: 'loud'. Expected one of the following valid values:"
        " 'debug, info, warn, error'."
    )


def test_a_failing_sink_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = RootAuditor()
    audit = AuditCapture()

    def broken(record: t.Any) -> None:
        raise RuntimeError("sink down")

    root.add_sink(broken)
    root.add_sink(audit)
    root.for_plugin("x").create_event("e").success()
    assert len(audit.records) == 2
    assert "An audit sink failed on x.e (RuntimeError)" in caplog.text
    with pytest.raises(ValueError):
        root.for_plugin("x").create_event("e", severity="urgent")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "hostname"),
    [
        ("backstage.example.com:7007", "backstage.example.com"),
        ("backstage.example.com", "backstage.example.com"),
        ("[::1]:7007", "[::1]"),
        ("[::1]", "[::1]"),
    ],
)
def test_the_hostname_is_the_host_without_its_port(host: str, hostname: str) -> None:
    audit = AuditCapture()
    app = Flask(__name__)
    with app.test_request_context("/x", headers={"Host": host}) as context:
        audit.auditor().create_event("e", request=context.request)
    assert audit.records[0].actor["hostname"] == hostname
