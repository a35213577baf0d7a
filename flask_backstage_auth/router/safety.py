"""What every endpoint the library serves does with bodies: bounded in, never cached out.

* A request body is bounded **before** anything reads it: a declared
  ``Content-Length`` over the limit is a 413 at once, and the limit is set on
  the request (``request.max_content_length``), so a chunked body (no
  ``Content-Length``) stops being read at the limit, with a 413 too.
* A response that carries a secret (a new token, a user token, a cookie
  holding one) says ``Cache-Control: no-store``.
"""

from __future__ import annotations

import typing as t

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.response import Response

from flask_backstage_auth.errors import PayloadTooLargeError

#: The largest request body an endpoint of the library reads (64 KiB).
MAX_BODY = 64 * 1024

_R = t.TypeVar("_R", bound=Response)


def too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The request body must not exceed {limit} bytes")


def bound_request_body(limit: int = MAX_BODY) -> int:
    """Limit the current request's body to ``limit`` bytes (or the app's smaller limit).

    Call it before anything reads the body (a ``before_request`` hook).

    :returns: the limit in force.
    :raises PayloadTooLargeError: the declared ``Content-Length`` exceeds it.
    """
    configured = request.max_content_length
    if configured is not None and configured < limit:
        limit = configured
    request.max_content_length = limit
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)
    return limit


def read_request_body(limit: int = MAX_BODY) -> bytes:
    """The current request's body, at most ``limit`` bytes, chunked or not.

    :raises PayloadTooLargeError: the body is larger.
    """
    limit = bound_request_body(limit)
    try:
        data = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise too_large(limit) from None
    if len(data) >= limit and request.content_length is None and _more_after_limit():
        raise too_large(limit)
    return data


def _more_after_limit() -> bool:
    # A streamed body stops being read at the limit, silently: one more byte
    # from the server's own (terminated) stream tells a body of exactly the
    # limit from a longer one.
    return bool(request.environ["wsgi.input"].read(1))


def no_store(response: _R) -> _R:
    """Mark a response that carries a secret as never to be stored by a cache."""
    response.headers["Cache-Control"] = "no-store"
    return response
