"""Who may change access tokens: the one check behind every write of the API.

Reading is open to whatever the route accepts (the ``backstage-auth`` cookie
included). Creating, rotating, narrowing and revoking a token need the
caller's own, full credentials: never a *limited* user token (the cookie's
kind, wherever it is presented), never a user's credentials carried by
another plugin on the user's behalf (such a plugin token holds only the
user's limited token), and, to create a token, never an access token.
The admin pages change tokens only through these API routes.
"""

from __future__ import annotations

from flask_backstage_auth.access_tokens.format import parse
from flask_backstage_auth.credentials import Credentials, UserPrincipal
from flask_backstage_auth.errors import NotAllowedError

LIMITED_REFUSED = "This endpoint does not allow limited user credentials"
ON_BEHALF_REFUSED = "This endpoint does not allow user credentials on behalf of '{actor}'"
ACCESS_TOKEN_CREATES = "An access token cannot create access tokens"
#: A rotation mints a new secret with a new expiry: a token rotating itself would
#: outlive every lifetime limit.
ACCESS_TOKEN_ROTATES = "An access token cannot rotate access tokens"


def is_access_token_caller(credentials: Credentials) -> bool:
    """Whether the request authenticated with one of our access tokens."""
    return credentials.token is not None and parse(credentials.token) is not None


def refusal(
    credentials: Credentials, *, creating: bool = False, rotating: bool = False
) -> str | None:
    """Why ``credentials`` may not change access tokens; ``None`` when they may."""
    if credentials.limited:
        return LIMITED_REFUSED
    principal = credentials.principal
    if isinstance(principal, UserPrincipal) and principal.actor is not None:
        return ON_BEHALF_REFUSED.format(actor=principal.actor.subject)
    if (creating or rotating) and is_access_token_caller(credentials):
        return ACCESS_TOKEN_CREATES if creating else ACCESS_TOKEN_ROTATES
    return None


def require_change_credentials(
    credentials: Credentials, *, creating: bool = False, rotating: bool = False
) -> Credentials:
    """``credentials``, if they may change access tokens.

    :raises NotAllowedError: 403, saying why not.
    """
    reason = refusal(credentials, creating=creating, rotating=rotating)
    if reason is not None:
        raise NotAllowedError(reason)
    return credentials
