"""``BACKSTAGE_AUTH_JSON_ERRORS``: every HTTP error of the app in Backstage's JSON shape.

Off by default: the library's own refusals always are (they are
:class:`~flask_backstage_auth.errors.BackstageError` s); with the setting on,
so are Flask's and Werkzeug's (404 of an unknown URL, 405, 500 without its
cause, and the body of a routing redirect such as the 308 to a missing
trailing slash). A handler the app registers for a status
(``@app.errorhandler(404)``) still takes precedence.
"""

from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from flask_backstage_auth.errors import BackstageError, as_backstage_error


def install_json_errors(app: Flask) -> None:
    """Render every ``HTTPException`` of ``app`` as Backstage's error body."""
    app.register_error_handler(HTTPException, _json_error)
    app.after_request(_json_redirect)


def _json_error(error: HTTPException) -> BackstageError:
    return as_backstage_error(error)


def _json_redirect(response: Response) -> Response:
    # Flask answers routing redirects itself, without error handlers.
    redirect = request.routing_exception
    if isinstance(redirect, RequestRedirect) and response.status_code == redirect.code:
        error = as_backstage_error(redirect)
        response.set_data(error.get_body(request.environ))
        response.content_type = "application/json; charset=utf-8"
    return response
