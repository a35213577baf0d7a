"""Errors that become Backstage's JSON error body.

Each error is an instance of Werkzeug's exception for its status
(:class:`~werkzeug.exceptions.Unauthorized`, :class:`~werkzeug.exceptions.Forbidden`,
...), so the same object can be raised in a view, returned from a
``before_request`` hook, called as a WSGI application by the middleware, and
handled by ``@app.errorhandler(401)`` like Flask's own. The body is
Backstage's ``ErrorResponseBody``::

    {"error": {"name": "AuthenticationError", "message": "Missing credentials"},
     "request": {"method": "GET", "url": "/entities"},
     "response": {"statusCode": 401}}

``request.url`` is the path as the plugin's router sees it (Backstage reports
Express's ``req.url`` inside the plugin router mounted at ``/api/<plugin id>``):
relative to the plugin's mount when the barrier has found one, the whole path
otherwise, and never the query string.
"""

from __future__ import annotations

import json
import typing as t

from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    HTTPException,
    InternalServerError,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
    Unauthorized,
)
from werkzeug.sansio.response import Response

if t.TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import WSGIEnvironment

#: The longest cause message kept in an error's text.
_MAX_CAUSE_LENGTH = 200


#: WSGI environ key: the mount of the request's plugin (``/api/catalog``),
#: set by the credentials barrier when it refuses a request; for an error
#: raised later, the barrier is asked (:func:`_plugin_mount`).
PLUGIN_MOUNT_KEY = "flask_backstage_auth.plugin_mount"


def request_url(environ: WSGIEnvironment) -> str:
    """The URL of an error body: the path as the plugin's router sees it.

    The path only: a query string may carry a token. Decoded as Werkzeug
    decodes it for routing (WSGI strings are latin-1).
    """
    path = _decoded(environ.get("PATH_INFO", ""))
    mount = environ.get(PLUGIN_MOUNT_KEY) or _plugin_mount(environ)
    if isinstance(mount, str) and mount and (path == mount or path.startswith(mount + "/")):
        return path[len(mount) :] or "/"
    return _decoded(environ.get("SCRIPT_NAME", "")) + path


def _plugin_mount(environ: WSGIEnvironment) -> str | None:
    """The mount of the request's plugin (``/api/catalog``), asked of the
    app's credentials barrier when this is the request of an app with
    ``BackstageAuth``: only when an error body is made."""
    from flask import current_app, has_request_context
    from flask import request as current_request

    if not has_request_context() or current_request.environ.get("PATH_INFO") != environ.get(
        "PATH_INFO"
    ):
        return None  # an error body for another request than the current one
    state = current_app.extensions.get("backstage_auth")
    barrier = getattr(state, "barrier", None)
    mount_of = getattr(barrier, "mount_of", None)
    return mount_of(current_request) if callable(mount_of) else None


def _decoded(wsgi_string: object) -> str:
    return str(wsgi_string or "").encode("latin-1", "replace").decode("utf-8", "replace")


def describe_cause(cause: BaseException | None) -> str:
    """``"<Name>: <message>"`` for a cause, shortened, on one line."""
    if cause is None:
        return ""
    message = cause.description if isinstance(cause, HTTPException) else str(cause)
    text = " ".join(str(message or "").split())
    if len(text) > _MAX_CAUSE_LENGTH:
        text = text[: _MAX_CAUSE_LENGTH - 3] + "..."
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


class BackstageError(HTTPException):
    """Base class: an HTTP error carrying Backstage's error name and message.

    :param message: the message, shown to the caller. Never put a token or a
        secret in it.
    :param cause: an optional underlying error; its name and message are
        appended as ``"; caused by <Name>: <message>"`` as Backstage's
        ``CustomErrorBase`` does.
    """

    code = 500
    #: Backstage's error class name, e.g. ``AuthenticationError``.
    error_name = "Error"
    #: Headers sent with the body (``Allow`` of a 405, ``Retry-After``).
    extra_headers: t.Sequence[tuple[str, str]] = ()

    def __init__(self, message: str = "", cause: BaseException | None = None) -> None:
        self.message = message
        self.cause = cause
        text = message
        if cause is not None:
            text = f"{message}; caused by {describe_cause(cause)}"
        super().__init__(description=text)
        if cause is not None:
            self.__cause__ = cause

    def to_dict(self, environ: WSGIEnvironment | None = None) -> dict[str, t.Any]:
        """The JSON body, with the request's method and path when known."""
        body: dict[str, t.Any] = {
            "error": {"name": self.error_name, "message": self.description},
        }
        if environ is not None:
            body["request"] = {
                "method": environ.get("REQUEST_METHOD", ""),
                "url": request_url(environ),
            }
        body["response"] = {"statusCode": self.code}
        return body

    def get_body(
        self, environ: WSGIEnvironment | None = None, scope: dict[str, t.Any] | None = None
    ) -> str:
        return json.dumps(self.to_dict(environ))

    def get_headers(
        self, environ: WSGIEnvironment | None = None, scope: dict[str, t.Any] | None = None
    ) -> list[tuple[str, str]]:
        return [("Content-Type", "application/json; charset=utf-8"), *self.extra_headers]

    def get_response(  # type: ignore[override]
        self,
        environ: WSGIEnvironment | None = None,
        scope: dict[str, t.Any] | None = None,
    ) -> Response:
        return super().get_response(environ, scope)  # type: ignore[arg-type]


class InputError(BackstageError, BadRequest):
    """400: the request itself is malformed."""

    code = 400
    error_name = "InputError"


class AuthenticationError(BackstageError, Unauthorized):
    """401: missing or invalid credentials. Carries ``WWW-Authenticate: Bearer``."""

    code = 401
    error_name = "AuthenticationError"

    def get_headers(
        self, environ: WSGIEnvironment | None = None, scope: dict[str, t.Any] | None = None
    ) -> list[tuple[str, str]]:
        return [*super().get_headers(environ, scope), ("WWW-Authenticate", "Bearer")]


class NotAllowedError(BackstageError, Forbidden):
    """403: valid credentials that may not do this."""

    code = 403
    error_name = "NotAllowedError"


class NotFoundError(BackstageError, NotFound):
    """404: no such thing."""

    code = 404
    error_name = "NotFoundError"


class ConflictError(BackstageError, Conflict):
    """409: the request conflicts with the current state."""

    code = 409
    error_name = "ConflictError"


class PayloadTooLargeError(BackstageError, RequestEntityTooLarge):
    """413: the request body is larger than the endpoint reads (Express's name)."""

    code = 413
    error_name = "PayloadTooLargeError"


class ServiceUnavailableError(BackstageError, ServiceUnavailable):
    """503: a dependency (a key store, a database) is not reachable."""

    code = 503
    error_name = "ServiceUnavailableError"


class HttpError(BackstageError):
    """Any other HTTP error (Werkzeug's or the app's), in Backstage's shape."""

    def __init__(self, message: str, code: int, error_name: str = "Error") -> None:
        super().__init__(message)
        self.code = code
        self.error_name = error_name


#: Backstage's error names by status (``getStatusCode`` in backend-defaults,
#: read backwards); other statuses are an ``Error``.
_NAMES = {
    400: "InputError",
    401: "AuthenticationError",
    403: "NotAllowedError",
    404: "NotFoundError",
    409: "ConflictError",
    413: "PayloadTooLargeError",
    429: "TooManyRequestsError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}


def as_backstage_error(error: HTTPException) -> BackstageError:
    """``error`` in Backstage's JSON shape (a :class:`BackstageError` stays as it is).

    A 500 says ``Internal server error`` and nothing of its cause; a
    redirect says its name, not its target.
    """
    if isinstance(error, BackstageError):
        return error
    code = error.code or 500
    if code == 500 or isinstance(error, InternalServerError):
        message = "Internal server error"
    elif code < 400:
        message = error.name  # a redirect's description is its URL, query string and all
    else:
        message = error.description or error.name
    converted = HttpError(message, code, _NAMES.get(code, "Error"))
    # Werkzeug's headers that belong to the status (Allow of a 405, Retry-After, Location).
    converted.extra_headers = [
        (k, v) for k, v in error.get_headers() if k.lower() != "content-type"
    ]
    return converted


class ConfigError(ValueError):
    """The configuration is invalid. Raised at start-up, never per request.

    The message names the offending config path, never a secret's value.
    """
