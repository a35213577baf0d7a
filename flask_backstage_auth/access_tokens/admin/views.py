"""The ``access-tokens-admin`` blueprint: the token pages and their assets.

How a page decides what to show (the views are ``unauthenticated`` for the
barrier, and check credentials themselves, as the ``access-tokens`` plugin):

* no credentials (no bearer header, no ``backstage-auth`` cookie), or invalid
  ones: the sign-in page (401), with a "Sign in as guest" button when the
  guest provider is usable (development);
* a user the permission policy refuses ``access-tokens:service:read`` (or
  ``access-tokens:personal:read`` on the personal page), or non-user
  credentials: the refusal page (403);
* otherwise the page, whose script calls the REST API with the user token it
  keeps in memory only, never in ``sessionStorage`` or ``localStorage``, where
  any page of the origin could read it (the cookie is a *limited* token: the
  API reads with it but changes nothing with it). Without one (after a reload,
  in a new tab), the page asks to sign in again.

Nothing in these views changes state. State changes are API calls carrying an
``Authorization`` header, which a cross-site page cannot send; the API never
reads the cookie on POST, PATCH or DELETE, so forged form posts answer 401,
and it refuses limited and on-behalf-of credentials for every change
(``flask_backstage_auth.access_tokens.guard``).
Every response carries a strict Content-Security-Policy (no inline script or
style, no framing), ``nosniff``, ``no-referrer`` and ``no-store``.
"""

from __future__ import annotations

import math
import typing as t
from pathlib import Path

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    render_template,
    request,
    send_from_directory,
)

from flask_backstage_auth.access_tokens.format import TokenKind
from flask_backstage_auth.access_tokens.state import PLUGIN_ID, AccessTokensState, get_state
from flask_backstage_auth.access_tokens.store import EXPIRING_WINDOW
from flask_backstage_auth.auth_backend.extension import EXTENSION_KEY as AUTH_BACKEND_KEY
from flask_backstage_auth.credentials import NONE_CREDENTIALS, Credentials, UserPrincipal
from flask_backstage_auth.errors import AuthenticationError, NotAllowedError
from flask_backstage_auth.router.policies import unauthenticated

#: The blueprint's name (the API's blueprint is ``access-tokens``).
BLUEPRINT_NAME = "access-tokens-admin"
SERVICE_PAGE = "/admin/access-tokens"
PERSONAL_PAGE = "/settings/personal-tokens"
STATIC_PATH = "/admin/access-tokens/static"

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATE_PREFIX = "access_tokens_admin/"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
DAY = 86400
REFUSED_SERVICE = "You do not have permission to manage access tokens"
REFUSED_PERSONAL = "You do not have permission to manage personal access tokens"
NOT_A_USER = "Access tokens are managed by people: sign in as a user"
PERSONAL_DISABLED = "Personal access tokens are not enabled on this backend"

Kind = TokenKind


def _days(seconds: float) -> int:
    return max(1, math.floor(seconds / DAY))


#: The expiry choices the pages offer, in days (those within the maximum).
EXPIRY_PRESETS = (7, 30, 90)


def expiry_presets(default_days: int, max_days: int) -> list[int]:
    """The preset lifetimes within ``max_days``, the default among them."""
    return sorted({d for d in EXPIRY_PRESETS if d <= max_days} | {default_days})


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = seconds // 60
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class _Pages:
    """The views, bound to one app's :class:`AccessTokensState`."""

    def __init__(self, state: AccessTokensState) -> None:
        self.state = state

    # -- context ----------------------------------------------------------

    def _prefix(self) -> str:
        return self.state.auth_state.settings.plugin_prefix

    def _guest_available(self) -> bool:
        backend = current_app.extensions.get(AUTH_BACKEND_KEY)
        guest = getattr(backend, "guest", None)
        if guest is None:
            return False
        return bool(
            getattr(backend, "development", False)
            or getattr(guest, "dangerously_allow_outside_development", False)
        )

    def _context(self, kind: Kind, user_ref: str | None) -> dict[str, t.Any]:
        prefix = self._prefix()
        settings = self.state.settings
        default, maximum = settings.lifetime(kind)
        max_days = _days(maximum)
        default_days = min(_days(default), max_days)
        max_grace = self.state.service.max_grace
        title = self.state.auth_state.config.get("app.title")
        return {
            "kind": kind,
            "service": kind == "service",
            "user_ref": user_ref,
            "app_title": title if isinstance(title, str) and title else "Backstage",
            "api_base": f"{prefix}/access-tokens",
            "cookie_url": f"{prefix}/access-tokens/.backstage/auth/v1/cookie",
            "guest_url": f"{prefix}/auth/guest/refresh",
            "guest_available": self._guest_available(),
            "personal_enabled": settings.personal_enabled,
            "service_page": SERVICE_PAGE,
            "personal_page": PERSONAL_PAGE,
            "scopes": self.state.service.catalogue.all(),
            "default_days": default_days,
            "max_days": max_days,
            "expiry_presets": expiry_presets(default_days, max_days),
            "expiring_days": EXPIRING_WINDOW // DAY,
            "max_grace_seconds": max_grace,
            "max_grace_human": _duration(max_grace),
        }

    # -- credentials ------------------------------------------------------

    def _credentials(self) -> tuple[Credentials, str | None]:
        """The caller's credentials (bearer or cookie), and why they were refused."""
        http_auth = self.state.auth_state.http_auth(PLUGIN_ID)
        try:
            return http_auth.credentials(allow_limited_access=True), None
        except AuthenticationError:
            return NONE_CREDENTIALS, "expired"
        except NotAllowedError:
            return NONE_CREDENTIALS, "not-a-user"

    def _render(self, template: str, status: int, **context: t.Any) -> Response:
        response = Response(render_template(TEMPLATE_PREFIX + template, **context), status=status)
        response.mimetype = "text/html"
        return response

    def page(self, kind: Kind) -> Response:
        credentials, problem = self._credentials()
        principal = credentials.principal
        if problem == "not-a-user" or principal.type == "service":
            context = self._context(kind, None)
            return self._render("refusal.html", 403, message=NOT_A_USER, **context)
        if not isinstance(principal, UserPrincipal):
            context = self._context(kind, None)
            response = self._render("signin.html", 401, expired=problem == "expired", **context)
            if problem == "expired" and request.cookies.get("backstage-auth"):
                self.state.auth_state.http_auth(PLUGIN_ID).remove_user_cookie(response)
            return response
        user_ref = principal.user_entity_ref
        context = self._context(kind, user_ref)
        service = self.state.service
        if kind == "personal":
            if not self.state.settings.personal_enabled:
                return self._render("refusal.html", 404, message=PERSONAL_DISABLED, **context)
            allowed = service.may_read(credentials, "personal", user_ref)
            refused = REFUSED_PERSONAL
        else:
            allowed = service.may_read(credentials, "service")
            refused = REFUSED_SERVICE
        if not allowed:
            return self._render("refusal.html", 403, message=refused, **context)
        return self._render("tokens.html", 200, **context)


def _static(filename: str) -> Response:
    """The pages' stylesheet and script: public, like any page asset."""
    return send_from_directory(STATIC_DIR, filename, max_age=300)


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if request.endpoint != f"{BLUEPRINT_NAME}.static":
        response.headers["Cache-Control"] = "no-store"
    return response


def create_admin_blueprint(state: AccessTokensState) -> Blueprint:
    """A fresh ``access-tokens-admin`` blueprint serving ``state``'s pages."""
    bp = Blueprint(BLUEPRINT_NAME, __name__, template_folder="templates")
    pages = _Pages(state)
    # The views check credentials themselves (sign-in page, refusal page):
    # the barrier lets them through. They only read; they change nothing.

    @unauthenticated
    def service_page() -> Response:
        return pages.page("service")

    @unauthenticated
    def personal_page() -> Response:
        return pages.page("personal")

    bp.add_url_rule(SERVICE_PAGE, "service", service_page, methods=["GET"])
    bp.add_url_rule(PERSONAL_PAGE, "personal", personal_page, methods=["GET"])
    bp.add_url_rule(
        f"{STATIC_PATH}/<path:filename>", "static", unauthenticated(_static), methods=["GET"]
    )
    bp.after_request(_security_headers)
    return bp


def init_admin(app: Flask) -> None:
    """Register the admin pages on an app that has :class:`AccessTokens` (once)."""
    if BLUEPRINT_NAME in app.blueprints:
        return
    app.register_blueprint(create_admin_blueprint(get_state(app)))
