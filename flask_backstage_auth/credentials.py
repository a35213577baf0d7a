"""Credentials and principals, as Backstage's ``BackstageCredentials``."""

from __future__ import annotations

import base64
import hashlib
import json
import typing as t
from dataclasses import dataclass, field

#: The principal types, plus ``"unknown"`` which matches any of them.
PrincipalType = t.Literal["user", "service", "none", "unknown"]
PRINCIPAL_TYPES: tuple[str, ...] = ("user", "service", "none", "unknown")

#: The actions a ``permissionAttribute`` restriction may name.
PERMISSION_ACTIONS = ("create", "read", "update", "delete")


@dataclass(frozen=True)
class AccessRestrictions:
    """What a service principal may do, from ``externalAccess.accessRestrictions``."""

    permission_names: tuple[str, ...] | None = None
    actions: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, t.Any]:
        data: dict[str, t.Any] = {}
        if self.permission_names is not None:
            data["permissionNames"] = list(self.permission_names)
        if self.actions is not None:
            data["permissionAttributes"] = {"action": list(self.actions)}
        return data


@dataclass(frozen=True)
class ServicePrincipal:
    """A service: ``plugin:<id>``, ``external:...`` or a configured subject."""

    subject: str
    access_restrictions: AccessRestrictions | None = None
    type: t.ClassVar[t.Literal["service"]] = "service"

    def to_dict(self) -> dict[str, t.Any]:
        data: dict[str, t.Any] = {"type": "service", "subject": self.subject}
        if self.access_restrictions is not None:
            data["accessRestrictions"] = self.access_restrictions.to_dict()
        return data

    def __str__(self) -> str:
        if self.access_restrictions is None:
            return f"servicePrincipal{{{self.subject}}}"
        digest = hashlib.sha256(json.dumps(self.access_restrictions.to_dict()).encode()).digest()
        fingerprint = base64.b64encode(digest).decode().rstrip("=")
        return f"servicePrincipal{{{self.subject},accessRestrictions={fingerprint}}}"


@dataclass(frozen=True)
class UserPrincipal:
    """A user, by entity ref; ``actor`` is the plugin acting on their behalf."""

    user_entity_ref: str
    actor: ServicePrincipal | None = None
    #: Set for a user acting through a scoped personal access token (our
    #: extension: Backstage restricts service principals only).
    access_restrictions: AccessRestrictions | None = None
    type: t.ClassVar[t.Literal["user"]] = "user"

    def to_dict(self) -> dict[str, t.Any]:
        data: dict[str, t.Any] = {"type": "user", "userEntityRef": self.user_entity_ref}
        if self.actor is not None:
            data["actor"] = self.actor.to_dict()
        if self.access_restrictions is not None:
            data["accessRestrictions"] = self.access_restrictions.to_dict()
        return data

    def __str__(self) -> str:
        actor = f",actor={self.actor}" if self.actor else ""
        return f"userPrincipal{{{self.user_entity_ref}{actor}}}"


@dataclass(frozen=True)
class NonePrincipal:
    """No credentials at all."""

    type: t.ClassVar[t.Literal["none"]] = "none"

    def to_dict(self) -> dict[str, t.Any]:
        return {"type": "none"}

    def __str__(self) -> str:
        return "nonePrincipal"


Principal = t.Union[UserPrincipal, ServicePrincipal, NonePrincipal]


@dataclass(frozen=True)
class Credentials:
    """Who made a request. ``token`` is kept out of ``repr`` and comparisons.

    :param expires_at: epoch seconds after which these credentials lapse.
    :param limited: the request presented a *limited* user token (the
        ``backstage-auth`` cookie's kind): it may read, never change anything.
    :param all_access_restrictions: every plugin the token may reach, with its
        restrictions (``None``: unrestricted); the principal carries only the
        current plugin's entry.
    """

    principal: Principal
    expires_at: float | None = None
    token: str | None = field(default=None, repr=False, compare=False)
    limited: bool = False
    all_access_restrictions: t.Mapping[str, AccessRestrictions] | None = field(
        default=None, repr=False, compare=False
    )

    def to_dict(self) -> dict[str, t.Any]:
        """A JSON-ready description, never including the token."""
        return {"principal": self.principal.to_dict()}

    def __str__(self) -> str:
        return f"backstageCredentials{{{self.principal}}}"


NONE_CREDENTIALS = Credentials(NonePrincipal())


def is_principal(credentials: Credentials, type: PrincipalType | str) -> bool:
    """Whether ``credentials`` are of principal ``type`` (``"unknown"``: any)."""
    if type == "unknown":
        return True
    return credentials.principal.type == type
