"""``flask backstage-auth ...``: secrets and tokens from the command line.

The group is installed through the ``flask.commands`` entry point, so it is
there for any Flask app. ``mint-token`` reads the app's ``BACKSTAGE_CONFIG``
(``backend.auth.keys`` and ``legacy`` external access); ``verify-token`` runs
the verifier of the app's ``BackstageAuth``, the one its barrier uses.
"""

from __future__ import annotations

import json
import sys
import typing as t

import click
from flask import current_app
from flask.cli import AppGroup

from flask_backstage_auth.access_tokens.cli import tokens_group
from flask_backstage_auth.config.reader import CONFIG_KEY
from flask_backstage_auth.db.cli import db_group
from flask_backstage_auth.errors import BackstageError, ConfigError
from flask_backstage_auth.legacy.secrets import MIN_SECRET_BYTES, generate_secret
from flask_backstage_auth.legacy.token_manager import ServerTokenManager

cli = AppGroup("backstage-auth", help="Backstage service-to-service auth.")
cli.add_command(db_group)
cli.add_command(tokens_group)


def _configured_token_manager() -> ServerTokenManager:
    try:
        return ServerTokenManager.from_config(current_app.config.get(CONFIG_KEY), development=False)
    except ConfigError as exc:
        raise click.ClickException(
            f"{exc}\nNote: a development server generates a key per process, so a"
            " token minted here could not be verified there; configure"
            " backend.auth.keys."
        ) from None


@cli.command("generate-secret", with_appcontext=False)
@click.option(
    "--bytes",
    "num_bytes",
    default=24,
    show_default=True,
    type=click.IntRange(min=MIN_SECRET_BYTES),
    help="Random bytes in the secret.",
)
def generate_secret_command(num_bytes: int) -> None:
    """Print a new random base64 secret for backend.auth.keys."""
    click.echo(generate_secret(num_bytes))


@cli.command("mint-token")
def mint_token_command() -> None:
    """Print a service token signed with the first configured key (valid 1 h)."""
    click.echo(_configured_token_manager().get_token().token)


@cli.command("verify-token")
@click.argument("token", required=False)
@click.option(
    "--plugin",
    "plugin_ids",
    multiple=True,
    metavar="PLUGIN",
    help="Also say whether PLUGIN accepts it (audience, access restrictions). Repeatable.",
)
def verify_token_command(token: str | None, plugin_ids: tuple[str, ...]) -> None:
    """Say whether TOKEN is accepted by this app, by which handler, and as whom.

    Every kind the app accepts: plugin and user tokens (with their JWKS),
    externalAccess (static, legacy, jwks), backend.auth.keys and access
    tokens, through the verifier the app's barrier uses. Give "-" or nothing to
    read the token from standard input (it stays out of the shell's history).
    Exits with status 1 when the token is refused. Never prints the token.
    """
    from flask_backstage_auth.auth.service import TokenRefused
    from flask_backstage_auth.extension import BackstageAuth

    if token is None or token == "-":
        token = sys.stdin.read().strip()
    try:
        state = BackstageAuth.state(current_app)
    except RuntimeError:
        raise click.ClickException(
            "The app has no BackstageAuth, so it accepts no token: call BackstageAuth(app)."
        ) from None
    try:
        explanation = state.verifier.explain(token)
    except TokenRefused as exc:
        if exc.handler is not None:
            click.echo(f"invalid: {exc.description} (refused by {exc.handler})", err=True)
        else:
            click.echo(f"invalid: {exc.description} (no handler recognised it)", err=True)
            click.echo(f"tried: {', '.join(exc.tried)}", err=True)
            click.echo(_unrecognised_hint(token), err=True)
        if state.settings.development:
            click.echo(
                "Note: this is a development app; its generated keys are this process's"
                " own, so tokens signed by another process (a running server) fail here.",
                err=True,
            )
        sys.exit(1)
    except BackstageError as exc:  # e.g. a JWKS or the key store unavailable
        raise click.ClickException(f"could not verify: {exc.description}") from None
    verified = explanation.verified
    click.echo(f"valid: accepted by {explanation.handler}")
    click.echo(f"principal: {_describe_principal(verified.principal)}")
    if verified.expires_at is None:
        click.echo("expires: never")
    else:
        click.echo(f"expires: in {int(verified.expires_at - state.clock())} s")
    if verified.limited:
        click.echo(
            "limited: yes (a limited user token: only where limited access is allowed,"
            " such as user-cookie routes)"
        )
    if verified.audiences is not None:
        click.echo(f"audience: {', '.join(verified.audiences) or '(none)'}")
    click.echo(f"restrictions: {_describe_restrictions(verified.restrictions)}")
    refused = False
    for plugin_id in plugin_ids:
        try:
            state.auth(plugin_id).authenticate(token, allow_limited_access=True)
        except BackstageError as exc:
            refused = True
            click.echo(f"plugin {plugin_id}: refused ({exc.code} {exc.description})")
        else:
            click.echo(f"plugin {plugin_id}: accepted")
    if refused:
        sys.exit(1)


def _unrecognised_hint(token: str) -> str:
    from flask_backstage_auth.auth.jose import peek

    peeked = peek(token)
    alg = peeked.header.get("alg") if peeked.header is not None else None
    if alg == "HS256":
        return (
            "hint: an HS256 token that no configured secret (backend.auth.keys, externalAccess"
            " legacy) signed, or with claims they refuse (aud, another typ)"
        )
    if isinstance(alg, str):
        return f"hint: a JWS signed with {alg[:16]!r}, of no kind this app accepts"
    return "hint: neither a JWS nor a configured static token nor an access token"


def _describe_principal(principal: t.Any) -> str:
    if principal.type == "user":
        actor = f" (actor: service {principal.actor.subject})" if principal.actor else ""
        return f"user {principal.user_entity_ref}{actor}"
    if principal.type == "service":
        return f"service {principal.subject}"
    return str(principal.type)


def _describe_restrictions(restrictions: t.Any) -> str:
    if restrictions is None:
        return "none (every plugin)"
    parts = []
    for plugin_id, restriction in restrictions.items():
        detail = restriction.to_dict()
        parts.append(f"{plugin_id} {json.dumps(detail, sort_keys=True)}" if detail else plugin_id)
    return "only " + "; ".join(parts)
