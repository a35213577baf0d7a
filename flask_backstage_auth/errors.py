"""Errors that become Backstage's JSON error body.

Each error is a :class:`werkzeug.exceptions.HTTPException`, so the same object
can be raised in a view, returned from a ``before_request`` hook, or called as a
WSGI application by the middleware. The body is Backstage's
``ErrorResponseBody``::

    {"error": {"name": "AuthenticationError", "message": "Missing credentials"},
     "request": {"method": "GET", "url": "/api/catalog/entities"},
     "response": {"statusCode": 401}}
"""

from __future__ import annotations

import json
import typing as t

from werkzeug.exceptions import HTTPException
from werkzeug.sansio.response import Response

if t.TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import WSGIEnvironment

#: The longest cause message kept in an error's text.
_MAX_CAUSE_LENGTH = 200


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
            # The path only: a query string may carry a token.
            url = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            body["request"] = {"method": environ.get("REQUEST_METHOD", ""), "url": url}
        body["response"] = {"statusCode": self.code}
        return body

    def get_body(
        self, environ: WSGIEnvironment | None = None, scope: dict[str, t.Any] | None = None
    ) -> str:
        return json.dumps(self.to_dict(environ))

    def get_headers(
        self, environ: WSGIEnvironment | None = None, scope: dict[str, t.Any] | None = None
    ) -> list[tuple[str, str]]:
        return [("Content-Type", "application/json; charset=utf-8")]

    def get_response(  # type: ignore[override]
        self,
        environ: WSGIEnvironment | None = None,
        scope: dict[str, t.Any] | None = None,
    ) -> Response:
        return super().get_response(environ, scope)  # type: ignore[arg-type]


class InputError(BackstageError):
    """400: the request itself is malformed."""

    code = 400
    error_name = "InputError"


class AuthenticationError(BackstageError):
    """401: missing or invalid credentials. Carries ``WWW-Authenticate: Bearer``."""

    code = 401
    error_name = "AuthenticationError"

    def get_headers(
        self, environ: WSGIEnvironment | None = None, scope: dict[str, t.Any] | None = None
    ) -> list[tuple[str, str]]:
        return [*super().get_headers(environ, scope), ("WWW-Authenticate", "Bearer")]


class NotAllowedError(BackstageError):
    """403: valid credentials that may not do this."""

    code = 403
    error_name = "NotAllowedError"


class NotFoundError(BackstageError):
    """404: no such thing."""

    code = 404
    error_name = "NotFoundError"


class ConflictError(BackstageError):
    """409: the request conflicts with the current state."""

    code = 409
    error_name = "ConflictError"


class PayloadTooLargeError(BackstageError):
    """413: the request body is larger than the endpoint reads (Express's name)."""

    code = 413
    error_name = "PayloadTooLargeError"


class ServiceUnavailableError(BackstageError):
    """503: a dependency (a key store, a database) is not reachable."""

    code = 503
    error_name = "ServiceUnavailableError"


class ConfigError(ValueError):
    """The configuration is invalid. Raised at start-up, never per request.

    The message names the offending config path, never a secret's value.
    """
