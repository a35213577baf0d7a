"""Admin web pages for access tokens, served by the ``access-tokens-admin`` blueprint.

* ``GET /admin/access-tokens``: service tokens (needs ``access-tokens:service:read``);
* ``GET /settings/personal-tokens``: the caller's own personal tokens;
* ``GET /admin/access-tokens/static/<file>``: their stylesheet and script.

The pages are server-rendered Jinja templates plus one plain script, with no
build step and nothing loaded from elsewhere. The script calls the REST API
(``<BACKSTAGE_AUTH_PLUGIN_PREFIX>/access-tokens``) with ``fetch`` and the user's token as a bearer
header; the API never reads the ``backstage-auth`` cookie on POST, PATCH or
DELETE, so a cross-site form or script cannot change anything (no CSRF).
See :mod:`flask_backstage_auth.access_tokens.admin.views`.
"""

from __future__ import annotations

from flask_backstage_auth.access_tokens.admin.views import (
    BLUEPRINT_NAME,
    create_admin_blueprint,
    init_admin,
)

__all__ = ["BLUEPRINT_NAME", "create_admin_blueprint", "init_admin"]
