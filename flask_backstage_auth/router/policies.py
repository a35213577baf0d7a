"""Auth policies: where the credentials barrier lets more through.

``unauthenticated`` lets any request through; ``user-cookie`` also accepts
the ``backstage-auth`` cookie. Policies attach to a blueprint (a plugin), to a
path inside it, or to one view. Paths follow Backstage's rules: ``/`` and
``*`` match everything; other paths match as a prefix on segment boundaries,
with an optional trailing slash, and ``:name`` matches one segment. Unlike
Backstage, matching is case-sensitive, because Flask routes are.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass

from flask import Blueprint

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

AuthPolicyAllow = t.Literal["unauthenticated", "user-cookie"]
ALLOW_VALUES: tuple[str, ...] = ("unauthenticated", "user-cookie")

#: Attribute set on views by the decorators, and on blueprints by add_auth_policy.
VIEW_ATTRIBUTE = "_backstage_auth_policy"
BLUEPRINT_ATTRIBUTE = "_backstage_auth_policies"

_PARAM = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")
_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'=@+,;-]+")


#: Bumped whenever a policy is added anywhere, so caches of policies know to refresh.
POLICY_VERSION = [0]


def policy_version() -> int:
    """A counter bumped whenever a policy is added anywhere (for caches)."""
    return POLICY_VERSION[0]


def bump_policy_version() -> None:
    POLICY_VERSION[0] += 1


def _validate_allow(allow: object) -> AuthPolicyAllow:
    if allow not in ALLOW_VALUES:
        raise ValueError(f"Invalid auth policy {allow!r}; expected one of {ALLOW_VALUES}")
    return t.cast(AuthPolicyAllow, allow)


def compile_policy_path(path: str) -> re.Pattern[str] | None:
    """The regex for a policy path; ``None`` matches every path.

    :raises ValueError: a path that is not ``/``, ``*`` or a ``/``-rooted
        sequence of literal and ``:param`` segments.
    """
    if path in ("/", "*"):
        return None
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"Invalid auth policy path {path!r}: must start with '/'")
    segments = path.strip("/").split("/")
    parts = []
    for segment in segments:
        if _PARAM.fullmatch(segment):
            parts.append("[^/]+")
        elif _LITERAL.fullmatch(segment) and segment not in (".", ".."):
            parts.append(re.escape(segment))
        else:
            raise ValueError(f"Invalid auth policy path {path!r}: bad segment {segment!r}")
    return re.compile("/" + "/".join(parts) + "(?:/.*)?")


@dataclass(frozen=True)
class AuthPolicy:
    """One policy: ``allow`` on ``path`` (relative to the plugin's mount)."""

    path: str
    allow: AuthPolicyAllow
    pattern: re.Pattern[str] | None

    @classmethod
    def create(cls, path: str, allow: str) -> AuthPolicy:
        return cls(path, _validate_allow(allow), compile_policy_path(path))

    def matches(self, relative_path: str) -> bool:
        return self.pattern is None or self.pattern.fullmatch(relative_path) is not None

    def sample_path(self) -> str:
        """A path this policy matches (``:name`` segments filled in)."""
        return _PARAM.sub("x", self.path.rstrip("/")) if self.pattern is not None else ""


def add_auth_policy(blueprint: Blueprint, *, path: str = "/", allow: str) -> AuthPolicy:
    """Attach a policy to a blueprint, for every app it is registered on.

    :raises ValueError: ``allow`` is not ``unauthenticated`` or
        ``user-cookie``, or the path is invalid.
    """
    policy = AuthPolicy.create(path, allow)
    policies = list(getattr(blueprint, BLUEPRINT_ATTRIBUTE, ()))
    policies.append(policy)
    setattr(blueprint, BLUEPRINT_ATTRIBUTE, tuple(policies))
    bump_policy_version()
    return policy


def blueprint_policies(blueprint: object | None) -> tuple[AuthPolicy, ...]:
    return tuple(getattr(blueprint, BLUEPRINT_ATTRIBUTE, ())) if blueprint else ()


def _mark(view: F, allow: AuthPolicyAllow) -> F:
    setattr(view, VIEW_ATTRIBUTE, allow)
    bump_policy_version()
    return view


def unauthenticated(view: F) -> F:
    """Decorator: this view needs no credentials at all."""
    return _mark(view, "unauthenticated")


def allow_user_cookie(view: F) -> F:
    """Decorator: this view also accepts the ``backstage-auth`` user cookie."""
    return _mark(view, "user-cookie")


def view_policy(view: t.Callable[..., t.Any] | None) -> str | None:
    """The policy a decorator set on ``view``, if any."""
    return getattr(view, VIEW_ATTRIBUTE, None) if view is not None else None
