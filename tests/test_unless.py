"""Unit tests of the express-unless style exemptions and the path helpers."""

from __future__ import annotations

import re
import typing as t

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from flask_backstage_auth.legacy.unless import PathRule, Unless
from flask_backstage_auth.router.paths import (
    is_clean_path,
    is_trustworthy_request_path,
    is_under_prefix,
    normalize_path,
    routing_path,
)

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

TECHDOCS_CSS = re.compile(r"/api/techdocs/static/docs/.+\.css")
SEED_TECHDOCS_CSS = re.compile(r"^/api/techdocs/static/docs/.+\.css")


def environ(path: str, method: str = "GET", *, raw: bool = True) -> WSGIEnvironment:
    """A WSGI environ for ``path`` as the Werkzeug test client builds it.

    :param raw: keep ``REQUEST_URI``/``RAW_URI`` (the undecoded path); without
        them the library can only trust the decoded ``PATH_INFO``.
    """
    env = EnvironBuilder(path=path, method=method).get_environ()
    if not raw:
        env.pop("REQUEST_URI", None)
        env.pop("RAW_URI", None)
    return env


def matches(unless: Unless, path: str, method: str = "GET") -> bool:
    return unless.matches(environ(path, method))


# --------------------------------------------------------------------------
# path: strings


def test_string_path_matches_exactly() -> None:
    unless = Unless.build(path="/api/app/health")
    assert matches(unless, "/api/app/health")
    assert not matches(unless, "/api/app/health/")
    assert not matches(unless, "/api/app/healthz")
    assert not matches(unless, "/api/app")
    assert not matches(unless, "/api/app/health/x")


def test_string_path_is_case_sensitive() -> None:
    unless = Unless.build(path="/api/app/health")
    assert not matches(unless, "/API/app/health")
    assert not matches(unless, "/api/app/Health")


def test_string_path_ignores_method() -> None:
    unless = Unless.build(path="/api/app/health")
    for method in ("GET", "POST", "DELETE", "OPTIONS"):
        assert matches(unless, "/api/app/health", method)


def test_string_path_ignores_query_string() -> None:
    unless = Unless.build(path="/api/app/health")
    assert matches(unless, "/api/app/health?x=1&y=/etc/passwd")
    assert not matches(Unless.build(path="/api/app/health?x=1"), "/api/app/health?x=1")


def test_string_path_matches_the_whole_path_not_the_mount() -> None:
    # Like express-unless' default (useOriginalUrl), paths include the prefix.
    unless = Unless.build(path="/static/docs/site.css")
    assert not matches(unless, "/api/techdocs/static/docs/site.css")


def test_decoded_unicode_path_matches() -> None:
    unless = Unless.build(path="/docs/caf\u00e9.css")
    assert matches(unless, "/docs/caf%C3%A9.css")


# --------------------------------------------------------------------------
# path: regular expressions


@pytest.mark.parametrize(
    "pattern", [TECHDOCS_CSS, SEED_TECHDOCS_CSS], ids=["plain", "seed-anchored"]
)
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/techdocs/static/docs/site.css", True),
        ("/api/techdocs/static/docs/a/b.css", True),
        ("/api/techdocs/static/docs/a/b/c/d.css", True),
        ("/api/techdocs/static/docs/.css.css", True),
        ("/api/techdocs/static/docs/a/b.css.html", False),
        ("/api/techdocs/static/docs/a/b.css/", False),
        ("/api/techdocs/static/docs/a/b.CSS", False),
        ("/api/techdocs/static/docs/a/bcss", False),
        ("/api/techdocs/static/docs/.css", False),
        ("/api/techdocs/static/docs/site.css.js", False),
        ("/x/api/techdocs/static/docs/site.css", False),
        ("/API/techdocs/static/docs/site.css", False),
        ("/api/techdocs/static/docs/site.css?x=.html", True),
        ("/api/techdocs/static/docs/site.html?x=.css", False),
    ],
)
def test_regex_must_match_the_whole_path(
    pattern: re.Pattern[str], path: str, expected: bool
) -> None:
    assert matches(Unless.build(path=pattern), path) is expected


def test_regex_partial_match_is_not_enough() -> None:
    # express-unless would skip on any partial match; we use re.fullmatch.
    unless = Unless.build(path=re.compile(r"/api/app"))
    assert re.compile(r"/api/app").search("/api/app/health")  # what express-unless does
    assert not matches(unless, "/api/app/health")
    assert matches(unless, "/api/app")


@pytest.mark.parametrize(
    "path",
    [
        "/api/techdocs/static/docs/../secret.css",
        "/api/techdocs/static/docs/./site.css",
        "/api/techdocs/static/docs//site.css",
        "/api/techdocs/static/docs/..\\secret.css",
        "/api/techdocs/static/docs/a%2fb.css",
        "/api/techdocs/static/docs/a%2Fb.css",
        "/api/techdocs/static/docs/%2e%2e/secret.css",
        "/api/techdocs/static/docs/site%2ecss",
        "/api/techdocs/static/docs/a%5cb.css",
        "/api/techdocs/static/docs/a%2541.css",
        "/api/techdocs/static/docs/secret.html%00.css",
        "/api/techdocs/static/docs/secret.html%0a.css",
        "/api/techdocs/static/docs/site%E9.css",
    ],
)
def test_untrustworthy_paths_never_match_a_regex(path: str) -> None:
    unless = Unless.build(path=TECHDOCS_CSS)
    assert not unless.matches(environ(path))


def test_encoded_slash_matches_only_when_the_raw_path_is_unknown() -> None:
    unless = Unless.build(path=TECHDOCS_CSS)
    assert not unless.matches(environ("/api/techdocs/static/docs/a%2fb.css"))
    # Without REQUEST_URI/RAW_URI only the decoded path is known, and it is clean.
    assert unless.matches(environ("/api/techdocs/static/docs/a%2fb.css", raw=False))


# --------------------------------------------------------------------------
# path: dict entries and PathRule


def test_dict_with_methods_list() -> None:
    unless = Unless.build(path={"url": "/api/x", "methods": ["GET", "HEAD"]})
    assert matches(unless, "/api/x", "GET")
    assert matches(unless, "/api/x", "HEAD")
    assert not matches(unless, "/api/x", "POST")
    assert not matches(unless, "/api/y", "GET")


def test_dict_with_single_method() -> None:
    unless = Unless.build(path={"url": "/api/x", "method": "GET"})
    assert matches(unless, "/api/x", "GET")
    assert not matches(unless, "/api/x", "POST")


def test_dict_methods_as_a_string() -> None:
    unless = Unless.build(path={"url": "/api/x", "methods": "DELETE"})
    assert matches(unless, "/api/x", "DELETE")
    assert not matches(unless, "/api/x", "GET")


def test_dict_method_comparison_is_exact() -> None:
    unless = Unless.build(path={"url": "/api/x", "method": "get"})
    assert not matches(unless, "/api/x", "GET")


def test_dict_without_method_matches_any_method() -> None:
    unless = Unless.build(path={"url": "/api/x"})
    assert matches(unless, "/api/x", "GET")
    assert matches(unless, "/api/x", "PATCH")


def test_dict_with_regex_url() -> None:
    unless = Unless.build(path={"url": TECHDOCS_CSS, "methods": ["GET"]})
    assert matches(unless, "/api/techdocs/static/docs/a.css", "GET")
    assert not matches(unless, "/api/techdocs/static/docs/a.css", "POST")
    assert not matches(unless, "/api/techdocs/static/docs/a.css.html", "GET")


@pytest.mark.parametrize("key", ["methods", "method"])
def test_dict_with_empty_method_list_matches_no_method(key: str) -> None:
    unless = Unless.build(path={"url": "/api/x", key: []})
    assert not matches(unless, "/api/x", "GET")
    assert not matches(unless, "/api/x", "POST")


def test_path_rule_instance() -> None:
    unless = Unless.build(path=PathRule("/api/x", frozenset({"POST"})))
    assert matches(unless, "/api/x", "POST")
    assert not matches(unless, "/api/x", "GET")
    assert matches(
        Unless.build(path=PathRule(TECHDOCS_CSS)), "/api/techdocs/static/docs/s.css", "PUT"
    )


def test_path_rule_matches_directly() -> None:
    rule = PathRule(re.compile(r"/a/.+"), frozenset({"GET"}))
    assert rule.matches("/a/b", "GET")
    assert not rule.matches("/a/b", "POST")
    assert not rule.matches("/b/a/b", "GET")
    assert PathRule("/a").matches("/a", "ANYTHING")
    assert not PathRule("/a", frozenset()).matches("/a", "GET")


def test_dict_builds_an_equal_path_rule() -> None:
    built = Unless.build(path={"url": "/api/x", "methods": ["GET", "POST"]})
    assert built.paths == (PathRule("/api/x", frozenset({"GET", "POST"})),)


# --------------------------------------------------------------------------
# path: lists


def test_list_of_paths_is_ored() -> None:
    unless = Unless.build(
        path=["/api/a", re.compile(r"/api/b/\d+"), {"url": "/api/c", "method": "POST"}]
    )
    assert matches(unless, "/api/a")
    assert matches(unless, "/api/b/42")
    assert not matches(unless, "/api/b/x")
    assert matches(unless, "/api/c", "POST")
    assert not matches(unless, "/api/c", "GET")
    assert not matches(unless, "/api/d")


def test_tuple_of_paths() -> None:
    unless = Unless.build(path=("/api/a", "/api/b"))
    assert matches(unless, "/api/a")
    assert matches(unless, "/api/b")
    assert not matches(unless, "/api/c")


def test_empty_path_list_matches_nothing() -> None:
    assert not matches(Unless.build(path=[]), "/api/a")


# --------------------------------------------------------------------------
# ext


def test_ext_is_a_raw_suffix() -> None:
    unless = Unless.build(ext="css")
    assert matches(unless, "/a.css")
    assert matches(unless, "/xcss")  # as express-unless: no dot is added
    assert not matches(unless, "/a.css/")
    assert not matches(unless, "/a.CSS")
    assert not matches(unless, "/a.cs")


def test_ext_with_dot() -> None:
    unless = Unless.build(ext=".css")
    assert matches(unless, "/a.css")
    assert not matches(unless, "/xcss")


def test_ext_list() -> None:
    unless = Unless.build(ext=[".css", ".png"])
    assert matches(unless, "/a.css")
    assert matches(unless, "/img/a.png")
    assert not matches(unless, "/a.html")


def test_ext_ignores_query_string() -> None:
    unless = Unless.build(ext=".css")
    assert not matches(unless, "/secret.html?x=.css")
    assert matches(unless, "/site.css?v=3")


@pytest.mark.parametrize(
    "path",
    ["/a/../b.css", "/a//b.css", "/a/./b.css", "/a%2fb.css", "/secret.html%00.css", "/a\\b.css"],
)
def test_ext_never_matches_untrustworthy_paths(path: str) -> None:
    assert not matches(Unless.build(ext=".css"), path)


# --------------------------------------------------------------------------
# method


def test_method_exemption_is_exact() -> None:
    unless = Unless.build(method="OPTIONS")
    assert matches(unless, "/anything", "OPTIONS")
    assert not matches(unless, "/anything", "GET")


def test_method_exemption_is_case_sensitive() -> None:
    unless = Unless.build(method="options")
    assert not matches(unless, "/anything", "OPTIONS")


def test_method_list() -> None:
    unless = Unless.build(method=["OPTIONS", "HEAD"])
    assert matches(unless, "/x", "HEAD")
    assert matches(unless, "/x", "OPTIONS")
    assert not matches(unless, "/x", "POST")


def test_method_applies_even_to_untrustworthy_paths() -> None:
    # A method exemption does not look at the path at all.
    unless = Unless.build(method="OPTIONS")
    assert matches(unless, "/a/../b", "OPTIONS")


# --------------------------------------------------------------------------
# custom


def test_custom_positional_receives_a_werkzeug_request() -> None:
    seen: list[Request] = []

    def predicate(request: Request) -> bool:
        seen.append(request)
        return request.path == "/skip" and request.args.get("k") == "v"

    unless = Unless.build(predicate)
    assert matches(unless, "/skip?k=v")
    assert not matches(unless, "/skip?k=w")
    assert not matches(unless, "/other?k=v")
    assert len(seen) == 3
    assert all(isinstance(request, Request) for request in seen)
    assert seen[0].method == "GET"


def test_custom_keyword() -> None:
    unless = Unless.build(custom=lambda request: request.method == "PUT")
    assert matches(unless, "/x", "PUT")
    assert not matches(unless, "/x", "GET")


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (True, True),
        (1, True),
        ("yes", True),
        ([0], True),
        (False, False),
        (0, False),
        ("", False),
        (None, False),
        ([], False),
    ],
)
def test_custom_truthiness(result: object, expected: bool) -> None:
    assert matches(Unless.build(custom=lambda request: result), "/x") is expected


def test_custom_sees_untrustworthy_paths_too() -> None:
    # The user's own predicate decides; only path/ext are gated by trustworthiness.
    unless = Unless.build(custom=lambda request: True)
    assert matches(unless, "/a/../b")


def test_custom_given_twice_is_refused() -> None:
    with pytest.raises(TypeError):
        Unless.build(lambda request: True, custom=lambda request: True)


# --------------------------------------------------------------------------
# OR across conditions


def test_conditions_are_ored() -> None:
    unless = Unless.build(
        path="/api/a",
        ext=".css",
        method="OPTIONS",
        custom=lambda request: request.args.get("skip") == "1",
    )
    assert matches(unless, "/api/a", "POST")
    assert matches(unless, "/b/c.css", "POST")
    assert matches(unless, "/b/c", "OPTIONS")
    assert matches(unless, "/b/c?skip=1", "POST")
    assert not matches(unless, "/b/c?skip=0", "POST")


def test_custom_is_consulted_when_path_does_not_match() -> None:
    calls: list[str] = []

    def predicate(request: Request) -> bool:
        calls.append(request.path)
        return False

    unless = Unless.build(path="/api/a", custom=predicate)
    assert not matches(unless, "/api/b")
    assert calls == ["/api/b"]


def test_empty_unless_matches_nothing() -> None:
    unless = Unless.build()
    for method in ("GET", "OPTIONS"):
        assert not matches(unless, "/", method)


# --------------------------------------------------------------------------
# invalid specifications


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"path": 42}, TypeError),
        ({"path": [re.compile("/a"), 42]}, TypeError),
        ({"path": b"/a"}, TypeError),
        ({"path": {"url": 42}}, TypeError),
        ({"path": {"methods": ["GET"]}}, ValueError),
        ({"path": {"url": "/a", "verb": "GET"}}, ValueError),
        ({"path": {}}, ValueError),
        ({"ext": ""}, ValueError),
        ({"ext": [".css", ""]}, ValueError),
        ({"ext": 3}, ValueError),
        ({"ext": [".css", None]}, ValueError),
        ({"method": 5}, ValueError),
        ({"method": ["GET", None]}, ValueError),
    ],
)
def test_invalid_specs_are_refused(kwargs: dict[str, t.Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Unless.build(**kwargs)


# --------------------------------------------------------------------------
# paths helpers


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", True),
        ("/a", True),
        ("/a/", True),
        ("/a/b.css", True),
        ("/.well-known/x", True),
        ("/a..b", True),
        ("/...", True),
        ("/caf\u00e9", True),
        ("", False),
        ("a/b", False),
        ("//", False),
        ("//a", False),
        ("/a//b", False),
        ("/a//", False),
        ("/.", False),
        ("/..", False),
        ("/a/.", False),
        ("/a/..", False),
        ("/a/./b", False),
        ("/a/../b", False),
        ("/a\\b", False),
        ("/a%2fb", False),
        ("/a%b", False),
        ("/a\x00b", False),
        ("/a\nb", False),
        ("/a\tb", False),
        ("/a\x7f", False),
        ("/a\ufffd", False),
    ],
)
def test_is_clean_path(path: str, expected: bool) -> None:
    assert is_clean_path(path) is expected


@pytest.mark.parametrize(
    ("path", "raw", "expected"),
    [
        ("/api/x/site.css", True, True),
        ("/api/x/site.css?q=%2f", True, True),
        ("/api/x/a%2fb.css", True, False),
        ("/api/x/a%2Fb.css", True, False),
        ("/api/x/a%2fb.css", False, True),
        ("/api/x/site%2ecss", True, False),
        ("/api/x/site%2Ecss", False, True),
        ("/api/x/a%5cb", True, False),
        ("/api/x/a%2541", True, False),
        ("/api/x/%2e%2e/y", True, False),
        ("/api/x/%2e%2e/y", False, False),
        ("/api/x/../y", True, False),
        ("/api/x//y", True, False),
        ("/api/x/a%00b", True, False),
        ("/api/x/a%E9b", True, False),
        ("/api/x/caf%C3%A9", True, True),
        ("/api/x/a%20b", True, True),
    ],
)
def test_is_trustworthy_request_path(path: str, raw: bool, expected: bool) -> None:
    assert is_trustworthy_request_path(environ(path, raw=raw)) is expected


def test_routing_path_decodes_utf8() -> None:
    assert routing_path(environ("/caf%C3%A9")) == "/caf\u00e9"
    assert routing_path({}) == "/"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("", "/"),
        ("/api/catalog", "/api/catalog"),
        ("/api//catalog", "/api/catalog"),
        ("//api/catalog", "/api/catalog"),
        ("///api///catalog//", "/api/catalog"),
        ("/api/x/../catalog", "/api/catalog"),
        ("/api/./catalog", "/api/catalog"),
        ("/api/catalog/", "/api/catalog"),
        ("/api\\catalog", "/api/catalog"),
        ("/api/x/..\\catalog", "/api/catalog"),
        ("/../../api/catalog", "/api/catalog"),
        ("api/catalog", "/api/catalog"),
        ("/API/Catalog", "/API/Catalog"),
    ],
)
def test_normalize_path(path: str, expected: str) -> None:
    assert normalize_path(path) == expected


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        ("/api/catalog", "/api/catalog", True),
        ("/api/catalog/", "/api/catalog", True),
        ("/api/catalog/entities", "/api/catalog", True),
        ("/api/catalog/entities", "/api/catalog/", True),
        ("/api/catalogue", "/api/catalog", False),
        ("/api/catalog-x/y", "/api/catalog", False),
        ("/api", "/api/catalog", False),
        ("/api/", "/api/catalog", False),
        ("/API/catalog", "/api/catalog", False),
        ("/x/api/catalog", "/api/catalog", False),
        ("/anything", "", True),
        ("/anything", "/", True),
    ],
)
def test_is_under_prefix(path: str, prefix: str, expected: bool) -> None:
    assert is_under_prefix(path, prefix) is expected
