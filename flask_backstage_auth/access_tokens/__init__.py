"""Long-lived access tokens: service tokens for scripts and CI, personal tokens for people.

``AccessTokens(app)`` mounts the ``access-tokens`` plugin (``/api/access-tokens``)
and makes its tokens authenticate on every plugin of the app, as access
restricted to their scopes.
"""

from __future__ import annotations

from flask_backstage_auth.access_tokens.extension import AccessTokens
from flask_backstage_auth.access_tokens.scopes import Scope

__all__ = ["AccessTokens", "Scope"]
