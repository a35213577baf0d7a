"""The token service that the REST API, the admin pages and the CLI share.

Every change a :class:`Caller` asks for passes the least-privilege guard in
the service itself, whatever the view checked before, and the permission
policy judges every call of a caller; the command line's :data:`CLI`
operator is audited by name and never judged by the policy. (The same rules
through HTTP, in production mode: ``test_access_tokens_least_privilege.py``.)
"""

from __future__ import annotations

import typing as t

import pytest

from flask_backstage_auth.access_tokens.audit import AuditTable
from flask_backstage_auth.access_tokens.format import generate_token
from flask_backstage_auth.access_tokens.guard import (
    ACCESS_TOKEN_CREATES,
    LIMITED_REFUSED,
    ON_BEHALF_REFUSED,
)
from flask_backstage_auth.access_tokens.scopes import ScopeCatalogue
from flask_backstage_auth.access_tokens.service import CLI, NOT_A_TOKEN, Caller, TokenService
from flask_backstage_auth.access_tokens.settings import DAY, AccessTokenSettings
from flask_backstage_auth.access_tokens.store import in_memory_store
from flask_backstage_auth.access_tokens.usage import UsageRecorder
from flask_backstage_auth.audit import RootAuditor
from flask_backstage_auth.credentials import Credentials, ServicePrincipal, UserPrincipal
from flask_backstage_auth.errors import NotAllowedError, NotFoundError
from flask_backstage_auth.permissions import (
    AllowAllPolicy,
    DenyAllPolicy,
    PermissionPolicy,
    PermissionsService,
)

NOW = 1_800_000_000.0
ALICE = "user:default/alice"
BOB = "user:default/bob"
TEAM = "group:default/team-a"
FULL = Credentials(UserPrincipal(ALICE), token="full-user-token")
LIMITED = Credentials(UserPrincipal(ALICE), token="limited-user-token", limited=True)
ON_BEHALF = Credentials(UserPrincipal(ALICE, actor=ServicePrincipal("plugin:search")), token="p")
AN_ACCESS_TOKEN = Credentials(
    ServicePrincipal(f"access-token:{TEAM}:ci"), token=generate_token("service").value
)


def make_service(policy: PermissionPolicy) -> tuple[TokenService, list[str]]:
    forgotten: list[str] = []
    store = in_memory_store()
    # As AccessTokens wires it: the plugin's auditor, whose events feed the audit table.
    auditor = RootAuditor(clock=lambda: NOW)
    auditor.add_sink(AuditTable(UsageRecorder(store, mode="inline")))
    service = TokenService(
        store,
        ScopeCatalogue(),
        AccessTokenSettings(),
        PermissionsService(enabled=True, policy=policy),
        clock=lambda: NOW,
        forget=forgotten.append,
        auditor=auditor.for_plugin("access-tokens"),
    )
    return service, forgotten


def create(service: TokenService, actor: t.Any = CLI, name: str = "ci") -> str:
    issued = service.create(
        actor,
        "service",
        name=name,
        description="",
        owner_ref=TEAM,
        scopes=["catalog:read", "catalog:write"],
        expires_at=NOW + DAY,
    )
    return issued.record.id


Change = t.Callable[[TokenService, Caller, str], object]

CHANGES: dict[str, Change] = {
    "create": lambda service, caller, token_id: create(service, caller, "another"),
    "rotate": lambda service, caller, token_id: service.rotate(
        caller, "service", token_id, grace_seconds=60, expires_at=NOW + 2 * DAY
    ),
    "update": lambda service, caller, token_id: service.update(
        caller, "service", token_id, scopes=["catalog:read"]
    ),
    "revoke": lambda service, caller, token_id: service.revoke(caller, "service", token_id),
}

REFUSED = [
    pytest.param(LIMITED, LIMITED_REFUSED, list(CHANGES), id="limited"),
    pytest.param(
        ON_BEHALF, ON_BEHALF_REFUSED.format(actor="plugin:search"), list(CHANGES), id="on-behalf"
    ),
    pytest.param(AN_ACCESS_TOKEN, ACCESS_TOKEN_CREATES, ["create"], id="access-token"),
]


@pytest.mark.parametrize(("credentials", "message", "refused"), REFUSED)
def test_the_service_guards_every_change_itself(
    credentials: Credentials, message: str, refused: list[str]
) -> None:
    service, forgotten = make_service(AllowAllPolicy())  # only the guard can refuse
    token_id = create(service)
    before = service.store.get(token_id, "service")
    for name in refused:
        with pytest.raises(NotAllowedError) as raised:
            CHANGES[name](service, Caller(credentials), token_id)
        assert raised.value.message == message, name
    assert service.store.get(token_id, "service") == before
    assert [event.event for event in service.store.events(token_id)] == ["created"]
    assert service.list_tokens(CLI, "service").total == 1
    assert forgotten == []


def test_full_credentials_change_tokens() -> None:
    """The positive control: the same calls with the user's own, full credentials."""
    service, forgotten = make_service(AllowAllPolicy())
    token_id = create(service)
    for name in ("create", "rotate", "update", "revoke"):
        CHANGES[name](service, Caller(FULL), token_id)
    events = service.store.events(token_id)
    assert [(event.event, event.actor) for event in events] == [
        ("revoked", ALICE),
        ("updated", ALICE),
        ("rotated", ALICE),
        ("created", "cli"),
    ]
    assert forgotten == [token_id] * 3  # rotated, narrowed, revoked: dropped from the cache


def test_the_policy_judges_a_caller_and_never_the_operator() -> None:
    service, _ = make_service(DenyAllPolicy())
    token_id = create(service)  # the operator: not judged
    caller = Caller(FULL)
    read, write, revoke = (
        f"access-tokens:service:{action}" for action in ("read", "write", "revoke")
    )
    calls: list[tuple[str, t.Callable[[], object]]] = [
        (read, lambda: service.list_tokens(caller, "service")),
        (read, lambda: service.get(caller, "service", token_id)),
        (read, lambda: service.audit(caller, "service", token_id)),
        (read, lambda: service.scopes(caller)),
        (write, lambda: CHANGES["create"](service, caller, token_id)),
        (write, lambda: CHANGES["rotate"](service, caller, token_id)),
        (write, lambda: CHANGES["update"](service, caller, token_id)),
        (revoke, lambda: CHANGES["revoke"](service, caller, token_id)),
    ]
    for permission, call in calls:
        with pytest.raises(NotAllowedError) as raised:
            call()
        assert raised.value.message == f"Permission denied: {permission}"
    assert [event.event for event in service.store.events(token_id)] == ["created"]

    service.rotate(CLI, "service", token_id, grace_seconds=60, expires_at=NOW + 2 * DAY)
    service.update(CLI, "service", token_id, description="by the operator")
    service.revoke(CLI, "service", token_id, reason="done")
    events = service.store.events(token_id)
    assert [(event.event, event.actor) for event in events] == [
        ("revoked", "cli"),
        ("updated", "cli"),
        ("rotated", "cli"),
        ("created", "cli"),
    ]


def test_self_is_only_the_token_that_authenticated() -> None:
    service, _ = make_service(AllowAllPolicy())
    personal = service.create(
        CLI,
        "personal",
        name="laptop",
        description="",
        owner_ref=ALICE,
        scopes=["catalog:read"],
        expires_at=NOW + DAY,
    )
    mine = Credentials(UserPrincipal(ALICE), token=personal.secret)
    found = service.find_self(mine, "personal", owner=ALICE)
    assert found == service.store.get(personal.record.id, "personal")
    ci = service.create(
        CLI,
        "service",
        name="ci",
        description="",
        owner_ref=TEAM,
        scopes=["catalog:read"],
        expires_at=NOW + DAY,
    )
    as_ci = Credentials(ServicePrincipal(f"access-token:{TEAM}:ci"), token=ci.secret)
    assert service.find_self(as_ci, "service") == service.store.get(ci.record.id, "service")
    unknown = generate_token("personal").value
    refused: list[tuple[Credentials, t.Any, str | None]] = [
        # Alice's token, presented for Bob.
        (Credentials(UserPrincipal(BOB), token=personal.secret), "personal", BOB),
        # A token of the other kind, or none at all.
        (Credentials(UserPrincipal(ALICE), token=ci.secret), "personal", ALICE),
        (Credentials(UserPrincipal(ALICE), token=None), "personal", ALICE),
        # A well-formed token the store does not have.
        (Credentials(UserPrincipal(ALICE), token=unknown), "personal", ALICE),
        # The service token's secret, with another token's subject.
        (
            Credentials(ServicePrincipal(f"access-token:{TEAM}:other"), token=ci.secret),
            "service",
            None,
        ),
        # The secret, from a principal that is not an access token.
        (Credentials(ServicePrincipal("external:ci"), token=ci.secret), "service", None),
    ]
    for credentials, kind, owner in refused:
        with pytest.raises(NotFoundError) as raised:
            service.find_self(credentials, kind, owner=owner)
        assert raised.value.message == NOT_A_TOKEN
