"""Our Alembic branch in an app that manages its schema with Flask-Migrate.

:func:`init_flask_migrate` is the one call. Our revisions stay out of the
app's history (an app with two heads in one ``alembic_version`` breaks plain
``flask db upgrade`` and ``flask db migrate`` with "Multiple head
revisions"): they are applied by our own Alembic environment and recorded in
``backstage_auth_alembic_version``, the table ``flask backstage-auth db``
uses, so both commands always see the same state of the same database (as a
Backstage plugin keeps its own knex migrations table).

Flask-Migrate is not a dependency: this module only reads what
``Migrate.init_app`` registered on the app.
"""

from __future__ import annotations

import typing as t

import click
from alembic import command
from flask import Flask

from flask_backstage_auth.db.cli import (
    alembic_config,
    app_connection,
    app_engine,
    upgrade_connection,
)
from flask_backstage_auth.db.storage import BRANCH_LABEL, alembic_include_name

__all__ = ["init_flask_migrate"]

IncludeName = t.Callable[[t.Optional[str], str, t.Mapping[str, t.Optional[str]]], bool]

# Set on the group we install, so that a second call changes nothing.
_WIRED = "_backstage_auth_wired"


def init_flask_migrate(app: Flask) -> None:
    """Wire our tables into the app's Flask-Migrate, after ``migrate.init_app(app, db)``.

    * ``flask db upgrade`` first upgrades our branch (to its heads, in
      ``backstage_auth_alembic_version``, taking over rows that an older
      recipe left in ``alembic_version``), then the app's revisions; with
      ``--sql`` it prints our SQL before the app's.
    * ``flask db migrate`` (autogenerate) ignores our tables and our version
      table, so it never offers to drop them; an ``include_name`` given to
      ``Migrate`` still applies to the other tables.
    * The other ``flask db`` commands are Flask-Migrate's own, on the app's
      history only (``flask db downgrade`` leaves our tables alone: use
      ``flask backstage-auth db downgrade``).

    :raises RuntimeError: when Flask-Migrate is not initialised on ``app``.
    """
    migrate_state = app.extensions.get("migrate")
    migrate = getattr(migrate_state, "migrate", None)
    configure_args = getattr(migrate_state, "configure_args", None)
    name = getattr(migrate, "command", None)
    group = app.cli.commands.get(name) if isinstance(name, str) else None
    if not isinstance(configure_args, dict) or not isinstance(group, click.Group):
        raise RuntimeError(
            "init_flask_migrate(app) needs Flask-Migrate on the app: call"
            " migrate.init_app(app, db) first"
        )
    if getattr(group, _WIRED, False):
        return
    configure_args["include_name"] = _with_our_tables_left_out(configure_args.get("include_name"))
    app.cli.add_command(_wired_group(group), name=name)


def _with_our_tables_left_out(app_include_name: IncludeName | None) -> IncludeName:
    if app_include_name is None:
        return alembic_include_name

    def include_name(
        name: str | None, type_: str, parent_names: t.Mapping[str, str | None]
    ) -> bool:
        return alembic_include_name(name, type_, parent_names) and app_include_name(
            name, type_, parent_names
        )

    return include_name


def _wired_group(group: click.Group) -> click.Group:
    """A copy of Flask-Migrate's group for this app, with our ``upgrade``.

    Flask-Migrate registers one module-level group on every app; changing it
    would change apps that did not ask, so this app gets its own.
    """
    upgrade = group.commands.get("upgrade")
    if upgrade is None or upgrade.callback is None:
        raise RuntimeError("Flask-Migrate's command group has no upgrade command")
    original = upgrade

    def upgrade_both(**kwargs: t.Any) -> t.Any:
        _upgrade_our_branch(sql=bool(kwargs.get("sql")))
        return click.get_current_context().invoke(t.cast(t.Any, original.callback), **kwargs)

    wired_upgrade = click.Command(
        name=original.name,
        params=list(original.params),
        callback=upgrade_both,
        help=f"{original.help or 'Upgrade to a later version.'}\n\nThe {BRANCH_LABEL}"
        " branch (flask-backstage-auth's tables) is upgraded to its heads first.",
        short_help=original.short_help,
    )
    wired = click.Group(
        name=group.name,
        commands={**group.commands, "upgrade": wired_upgrade},
        params=list(group.params),
        callback=group.callback,
        help=group.help,
        invoke_without_command=group.invoke_without_command,
        no_args_is_help=group.no_args_is_help,
    )
    setattr(wired, _WIRED, True)
    return wired


def _upgrade_our_branch(*, sql: bool) -> None:
    if sql:
        # Offline: only the dialect matters, the password stays out of it.
        with app_engine() as engine:
            url = engine.url.set(password=None).render_as_string(hide_password=False)
        config = alembic_config()
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        command.upgrade(config, "heads", sql=True)
        return
    with app_connection(begin=True) as connection:
        upgrade_connection(connection)
