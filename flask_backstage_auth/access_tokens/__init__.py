"""Long-lived access tokens: service tokens for scripts and CI, personal tokens for people.

``AccessTokens(app)`` mounts the ``access-tokens`` plugin
(``<BACKSTAGE_AUTH_PLUGIN_PREFIX>/access-tokens``, ``/api/access-tokens`` by default)
and makes its tokens authenticate on every plugin of the app, as access
restricted to their scopes.

What lives here, from the outside in: ``extension`` (``AccessTokens``, which
builds the rest), ``api`` (the REST API, HTTP only), ``admin`` (the web
pages), ``cli`` (``flask backstage-auth tokens``); ``service`` (every
operation on tokens, shared by those three), ``validation``, ``guard`` (who
may change tokens) and ``permissions``; ``state`` and ``settings`` (what the
extension built, and ``accessTokens.*``); ``authenticator`` (a token on a
request), ``usage`` (its last use, written off the request's path),
``ratelimit`` (the leak report's per-client limit),
``store`` (the tables), ``format`` and ``scopes``.
"""

from __future__ import annotations

from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.access_tokens.scopes import Scope

__all__ = ["AccessTokens", "Scope"]
