"""Exemptions in the style of ``express-unless``.

``rule.unless(path=..., ext=..., method=..., custom=...)`` skips the rule when
any condition matches. Differences from express-unless, on purpose:

* paths are matched against the decoded path that routing uses (``PATH_INFO``),
  not the raw URL;
* a regular expression must match the **whole** path (``re.fullmatch``): the
  seed's ``^/api/techdocs/static/docs/.+\\.css`` exempts ``/x.css`` but not
  ``/x.css.html`` or ``/x.css/``;
* ``path`` and ``ext`` conditions never match a path with dot segments,
  repeated slashes, backslashes or encoded separators
  (:func:`~flask_backstage_auth.router.paths.is_trustworthy_request_path`).
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass

from werkzeug.wrappers import Request

from flask_backstage_auth.router.paths import is_trustworthy_request_path, routing_path

if t.TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import WSGIEnvironment

PathPattern = t.Union[str, "re.Pattern[str]"]
CustomPredicate = t.Callable[[Request], object]


@dataclass(frozen=True)
class PathRule:
    """A ``path`` entry: a string (exact) or regex (whole path), optionally per method."""

    url: PathPattern
    methods: frozenset[str] | None = None

    def matches(self, path: str, method: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if isinstance(self.url, str):
            return path == self.url
        return self.url.fullmatch(path) is not None


PathSpec = t.Union[PathPattern, PathRule, t.Mapping[str, t.Any]]


def _as_list(value: t.Any) -> list[t.Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def _path_rule(spec: PathSpec) -> PathRule:
    if isinstance(spec, PathRule):
        return spec
    if isinstance(spec, (str, re.Pattern)):
        return PathRule(spec)
    if isinstance(spec, t.Mapping):
        unknown = set(spec) - {"url", "method", "methods"}
        if unknown or "url" not in spec:
            raise ValueError("a path entry must be {'url': str | regex, 'method(s)': str | list}")
        if "method" in spec or "methods" in spec:
            # As in express-unless, an empty list matches no method at all.
            methods = _as_list(spec.get("method", spec.get("methods")))
            return PathRule(_path_rule(spec["url"]).url, frozenset(methods))
        return PathRule(_path_rule(spec["url"]).url)
    raise TypeError(f"unsupported path condition: {type(spec).__name__}")


@dataclass(frozen=True)
class Unless:
    """One ``unless(...)`` call: its conditions are ORed."""

    paths: tuple[PathRule, ...] = ()
    exts: tuple[str, ...] = ()
    methods: frozenset[str] = frozenset()
    custom: CustomPredicate | None = None

    @classmethod
    def build(
        cls,
        custom_or_none: CustomPredicate | None = None,
        *,
        path: PathSpec | t.Sequence[PathSpec] | None = None,
        ext: str | t.Sequence[str] | None = None,
        method: str | t.Sequence[str] | None = None,
        custom: CustomPredicate | None = None,
    ) -> Unless:
        if custom_or_none is not None and custom is not None:
            raise TypeError("give the custom predicate once")
        exts = tuple(_as_list(ext))
        if any(not isinstance(e, str) or not e for e in exts):
            raise ValueError("ext entries must be non-empty strings")
        methods = _as_list(method)
        if any(not isinstance(m, str) for m in methods):
            raise ValueError("method entries must be strings")
        return cls(
            paths=tuple(_path_rule(p) for p in _as_list(path)),
            exts=exts,
            methods=frozenset(methods),
            custom=custom_or_none or custom,
        )

    def matches(self, environ: WSGIEnvironment) -> bool:
        method = environ.get("REQUEST_METHOD", "GET")
        if method in self.methods:
            return True
        if self.paths or self.exts:
            if is_trustworthy_request_path(environ):
                path = routing_path(environ)
                if any(rule.matches(path, method) for rule in self.paths):
                    return True
                if any(path.endswith(ext) for ext in self.exts):
                    return True
        if self.custom is not None:
            return bool(self.custom(Request(environ)))
        return False
