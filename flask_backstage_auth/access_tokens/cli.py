"""``flask backstage-auth tokens ...``: service access tokens from the command line.

``create`` prints the new token once on standard output (its id on standard
error, so that ``TOKEN=$(flask backstage-auth tokens create ...)`` captures
the secret alone); ``list`` never shows a secret; ``rotate`` prints the new
token; ``revoke`` refuses it at once on this instance. Every change is
audited with the actor ``cli``. The app must register :class:`AccessTokens`.
Input is checked by the REST API's own validators (``api.validate_name``,
``api.validate_scopes``, ``api.normalize_group_ref``, ``api.resolve_expiry``).
"""

from __future__ import annotations

import datetime as dt
import typing as t
from contextlib import contextmanager

import click
from flask.cli import AppGroup

from flask_backstage_auth.access_tokens import api
from flask_backstage_auth.access_tokens.extension import AccessTokens, AccessTokensState
from flask_backstage_auth.access_tokens.format import generate_token
from flask_backstage_auth.access_tokens.store import TokenRecord
from flask_backstage_auth.errors import BackstageError, InputError

#: The actor of every change made here, in the audit trail.
CLI_ACTOR = "cli"
_STATUSES = ("active", "expiring", "expired", "revoked")

tokens_group = AppGroup("tokens", help="Service access tokens (the access-tokens plugin).")


def _state() -> AccessTokensState:
    try:
        return AccessTokens.state()
    except RuntimeError:
        raise click.ClickException(
            "AccessTokens is not registered on this app: add AccessTokens(app) after"
            " BackstageAuth(app)."
        ) from None


@contextmanager
def _usage_errors() -> t.Iterator[None]:
    """The API's 400s (:class:`InputError`) as usage errors (exit status 2)."""
    try:
        yield
    except InputError as exc:
        raise click.UsageError(exc.message) from None


def group_ref(value: str) -> str:
    """``team-a`` → ``group:default/team-a``, as the API normalises ``groupEntityRef``."""
    with _usage_errors():
        return api.normalize_group_ref(
            value if value.startswith("group:") else f"group:{value}", "--group"
        )


def _expiry(state: AccessTokensState, days: int | None, now: float) -> float:
    body = {} if days is None else {"expiresInDays": days}
    with _usage_errors():
        expires_at = api.resolve_expiry(
            body,
            now,
            default=state.settings.default_lifetime,
            maximum=state.settings.max_lifetime,
            required=True,
        )
    return t.cast(float, expires_at)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _fail(exc: BackstageError) -> click.ClickException:
    return click.ClickException(exc.description or exc.error_name)


@tokens_group.command("create")
@click.option("--name", required=True, help="Unique among the group's tokens: [a-z0-9-]{1,100}.")
@click.option("--group", "group", required=True, help="Owning group: team-a or group:ns/team-a.")
@click.option("--scope", "scopes", multiple=True, required=True, help="A scope (repeatable).")
@click.option("--description", default="", help="What the token is for.")
@click.option("--expires-in-days", type=int, default=None, help="Default: the configured default.")
def create_command(
    name: str, group: str, scopes: tuple[str, ...], description: str, expires_in_days: int | None
) -> None:
    """Create a service token; print it (once) on stdout, its id on stderr."""
    state = _state()
    owner = group_ref(group)
    if len(description) > api.MAX_DESCRIPTION:
        raise click.UsageError(f"--description must be at most {api.MAX_DESCRIPTION} characters")
    with _usage_errors():
        api.validate_name({"name": name})
        scope_ids = api.validate_scopes({"scopes": list(scopes)}, state)
    now = state.clock()
    expires_at = _expiry(state, expires_in_days, now)
    token = generate_token("service")
    try:
        record = state.store.create(
            kind="service",
            name=name,
            description=description,
            digest=token.digest,
            token_prefix=token.display_prefix,
            owner_ref=owner,
            scopes=scope_ids,
            created_by=CLI_ACTOR,
            expires_at=expires_at,
            now=now,
        )
    except BackstageError as exc:
        raise _fail(exc) from None
    click.echo(token.value)
    click.echo(f"id: {record.id} (expires {_when(record.expires_at)} UTC)", err=True)


@tokens_group.command("list")
@click.option("--status", type=click.Choice(_STATUSES), default=None)
@click.option("--group", "group", default=None, help="Only this group's tokens.")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=50, show_default=True)
def list_command(status: str | None, group: str | None, limit: int) -> None:
    """List service tokens (never their secrets), newest first."""
    state = _state()
    owners = [group_ref(group)] if group is not None else None
    now = state.clock()
    try:
        records, total = state.store.list_tokens(
            "service",
            now=now,
            owner_refs=owners,
            status=t.cast(t.Any, status),
            limit=limit,
        )
    except BackstageError as exc:
        raise _fail(exc) from None
    rows = [_row(record, now) for record in records]
    header = ("ID", "NAME", "GROUP", "PREFIX", "STATUS", "SCOPES", "EXPIRES", "LAST USED")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    click.echo(f"{len(rows)} of {total} token(s)", err=True)


def _row(record: TokenRecord, now: float) -> tuple[str, ...]:
    return (
        record.id,
        record.name,
        record.owner_ref,
        record.token_prefix + "…",
        record.status(now),
        ",".join(record.scopes),
        _when(record.expires_at),
        _when(record.last_used_at),
    )


@tokens_group.command("rotate")
@click.argument("token_id")
@click.option(
    "--grace-seconds",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="How long the old secret keeps working (at most maxRotationGraceSeconds).",
)
@click.option("--expires-in-days", type=int, default=None, help="Default: the configured default.")
def rotate_command(token_id: str, grace_seconds: int, expires_in_days: int | None) -> None:
    """Give a token a new secret and expiry; print the new token (once)."""
    state = _state()
    max_grace = int(state.settings.max_rotation_grace)
    if grace_seconds > max_grace:
        raise click.BadParameter(f"at most {max_grace} seconds", param_hint="'--grace-seconds'")
    now = state.clock()
    expires_at = _expiry(state, expires_in_days, now)
    token = generate_token("service")
    try:
        current = state.store.get(token_id, "service")
        if current is None:
            raise click.ClickException(f"No service token with id '{token_id}'")
        grace_until = min(now + grace_seconds, current.expires_at) if grace_seconds else None
        record = state.store.rotate(
            token_id,
            "service",
            digest=token.digest,
            token_prefix=token.display_prefix,
            expires_at=expires_at,
            grace_until=grace_until,
            actor=CLI_ACTOR,
            now=now,
        )
    except BackstageError as exc:
        raise _fail(exc) from None
    state.forget(token_id)
    click.echo(token.value)
    click.echo(f"id: {record.id} (expires {_when(record.expires_at)} UTC)", err=True)


@tokens_group.command("revoke")
@click.argument("token_id")
@click.option("--reason", default=None, help="Why (kept in the audit trail).")
def revoke_command(token_id: str, reason: str | None) -> None:
    """Revoke a token (refused at once here, within revocationCheckSeconds elsewhere)."""
    state = _state()
    if reason is not None and len(reason) > api.MAX_REASON:
        raise click.UsageError(f"--reason must be at most {api.MAX_REASON} characters")
    try:
        state.store.revoke(token_id, "service", actor=CLI_ACTOR, reason=reason, now=state.clock())
    except BackstageError as exc:
        raise _fail(exc) from None
    state.forget(token_id)
    click.echo(f"revoked {token_id}")
