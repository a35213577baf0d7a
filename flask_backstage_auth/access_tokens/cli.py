"""``flask backstage-auth tokens ...``: service access tokens from the command line.

``create`` prints the new token once on standard output (its id on standard
error, so that ``TOKEN=$(flask backstage-auth tokens create ...)`` captures
the secret alone); ``list`` never shows a secret; ``rotate`` prints the new
token; ``revoke`` refuses it at once on this instance. Every change goes
through :class:`~flask_backstage_auth.access_tokens.service.TokenService`,
audited with the actor ``cli`` (:data:`~flask_backstage_auth.access_tokens.service.CLI`).
Input is checked by the REST API's own validators
(:mod:`~flask_backstage_auth.access_tokens.validation`); a bad value is a
usage error (exit status 2). The app must register :class:`AccessTokens`.
"""

from __future__ import annotations

import datetime as dt
import typing as t
from contextlib import contextmanager

import click
from flask.cli import AppGroup

from flask_backstage_auth.access_tokens.service import CLI, TokenService
from flask_backstage_auth.access_tokens.state import get_state
from flask_backstage_auth.access_tokens.store import TokenRecord
from flask_backstage_auth.access_tokens.validation import (
    MAX_DESCRIPTION,
    MAX_REASON,
    normalize_group_ref,
    scope_list,
    validate_name,
)
from flask_backstage_auth.errors import BackstageError, InputError

#: The actor of every change made here, in the audit trail.
CLI_ACTOR = CLI.name
_STATUSES = ("active", "expiring", "expired", "revoked")

tokens_group = AppGroup("tokens", help="Service access tokens (the access-tokens plugin).")


def _service() -> TokenService:
    try:
        return get_state().service
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


@contextmanager
def _failures() -> t.Iterator[None]:
    """Any other refusal (no such token, already revoked, database down): exit status 1."""
    try:
        yield
    except BackstageError as exc:
        raise click.ClickException(exc.description or exc.error_name) from None


def group_ref(value: str) -> str:
    """``team-a`` → ``group:default/team-a``, as the API normalises ``groupEntityRef``."""
    with _usage_errors():
        return normalize_group_ref(
            value if value.startswith("group:") else f"group:{value}", "--group"
        )


def _expiry(service: TokenService, days: int | None) -> float:
    with _usage_errors():
        return service.expiry("service", expires_in_days=days)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


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
    service = _service()
    owner = group_ref(group)
    if len(description) > MAX_DESCRIPTION:
        raise click.UsageError(f"--description must be at most {MAX_DESCRIPTION} characters")
    with _usage_errors():
        validate_name(name)
        scope_ids = service.check_scopes(scope_list(list(scopes)))
    expires_at = _expiry(service, expires_in_days)
    with _failures():
        issued = service.create(
            CLI,
            "service",
            name=name,
            description=description,
            owner_ref=owner,
            scopes=scope_ids,
            expires_at=expires_at,
        )
    click.echo(issued.secret)
    record = issued.record
    click.echo(f"id: {record.id} (expires {_when(record.expires_at)} UTC)", err=True)


@tokens_group.command("list")
@click.option("--status", type=click.Choice(_STATUSES), default=None)
@click.option("--group", "group", default=None, help="Only this group's tokens.")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=50, show_default=True)
def list_command(status: str | None, group: str | None, limit: int) -> None:
    """List service tokens (never their secrets), newest first."""
    service = _service()
    owners = [group_ref(group)] if group is not None else None
    with _failures():
        page = service.list_tokens(
            CLI, "service", owner_refs=owners, status=t.cast(t.Any, status), limit=limit
        )
    records, total, now = page.tokens, page.total, page.now
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
    service = _service()
    if grace_seconds > service.max_grace:
        raise click.BadParameter(
            f"at most {service.max_grace} seconds", param_hint="'--grace-seconds'"
        )
    expires_at = _expiry(service, expires_in_days)
    with _failures():
        issued = service.rotate(
            CLI, "service", token_id, grace_seconds=grace_seconds, expires_at=expires_at
        )
    click.echo(issued.secret)
    record = issued.record
    click.echo(f"id: {record.id} (expires {_when(record.expires_at)} UTC)", err=True)


@tokens_group.command("revoke")
@click.argument("token_id")
@click.option("--reason", default=None, help="Why (kept in the audit trail).")
def revoke_command(token_id: str, reason: str | None) -> None:
    """Revoke a token (refused at once here, and elsewhere once pushed or polled)."""
    service = _service()
    if reason is not None and len(reason) > MAX_REASON:
        raise click.UsageError(f"--reason must be at most {MAX_REASON} characters")
    with _failures():
        service.revoke(CLI, "service", token_id, reason=reason)
    click.echo(f"revoked {token_id}")
