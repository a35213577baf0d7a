"""``flask backstage-auth ...``: secrets and service tokens from the command line.

The group is installed through the ``flask.commands`` entry point, so it is
there for any Flask app; token commands read the app's
``BACKSTAGE_CONFIG`` (``backend.auth.keys`` and ``legacy`` external access).
"""

from __future__ import annotations

import sys
import time

import click
from flask import current_app
from flask.cli import AppGroup

from flask_backstage_auth.access_tokens.cli import tokens_group
from flask_backstage_auth.config.reader import CONFIG_KEY
from flask_backstage_auth.db.cli import db_group
from flask_backstage_auth.errors import AuthenticationError, ConfigError
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
def verify_token_command(token: str | None) -> None:
    """Say whether TOKEN (or standard input) is a valid service token here."""
    if token is None or token == "-":
        token = sys.stdin.read().strip()
    manager = _configured_token_manager()
    try:
        claims = manager.verify(token)
    except AuthenticationError as exc:
        click.echo(f"invalid: {exc.description}", err=True)
        sys.exit(1)
    remaining = int(claims["exp"] - time.time())
    click.echo(f"valid: sub={claims['sub']}, expires in {remaining} s")
