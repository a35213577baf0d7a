"""The memo of a request's credentials, kept in the request's WSGI environ.

Everything that wants a request's credentials reads this memo: the
credentials barrier, the ``http_auth`` service,
:func:`~flask_backstage_auth.extension.get_credentials` and the legacy
require-authentication middleware. Nothing else stores credentials on a
request. The memo has two parts:

* **found**: what one plugin's ``http_auth`` service found in the request,
  once per plugin and per ``allow_limited_access`` value (the cookie counts
  only with it, and limited tokens only for GET and HEAD, so the two can
  differ). Only :class:`~flask_backstage_auth.http_auth.service.HttpAuthService`
  writes it, so a token is verified at most once per plugin and flag in a
  request. An ``allow`` list is never memoised: it is checked on every call.
* **established**: the credentials a gate let the request through with (the
  barrier, or the middleware), under the public key :data:`ESTABLISHED_KEY`.
  They are what ``get_credentials()`` and ``get_middleware_credentials()``
  return. A gate that runs later (an old plugin's own middleware) replaces
  them.
"""

from __future__ import annotations

import typing as t

from flask_backstage_auth.credentials import Credentials

#: The ``environ`` key of the credentials a gate established (a public name:
#: code of the old backend system reads and writes it directly).
ESTABLISHED_KEY = "flask_backstage_auth.credentials"

_FOUND_PREFIX = ESTABLISHED_KEY + ":"


def found_keys(plugin_id: str) -> t.Mapping[bool, str]:
    """The ``environ`` keys of what ``plugin_id``'s ``http_auth`` found, by
    ``allow_limited_access``; a service computes them once and reads them per request."""
    return {False: f"{_FOUND_PREFIX}{plugin_id}", True: f"{_FOUND_PREFIX}{plugin_id}:limited"}


def established(environ: t.Mapping[str, t.Any]) -> Credentials | None:
    """The credentials a gate established for this request, if any."""
    credentials = environ.get(ESTABLISHED_KEY)
    return credentials if isinstance(credentials, Credentials) else None


def establish(environ: t.MutableMapping[str, t.Any], credentials: Credentials) -> None:
    """Record the credentials a gate let this request through with."""
    environ[ESTABLISHED_KEY] = credentials
