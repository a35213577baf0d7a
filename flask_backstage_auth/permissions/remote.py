"""The deployment's permission backend, asked over HTTP (Backstage's ``PermissionClient``).

``POST <discovery base URL of 'permission'>/authorize`` with
``{"items": [{"id", "permission", "resourceRef"?}, ...]}``, one request per
call, a plugin token on behalf of the caller (none for ``none`` credentials).
The answer ``{"items": [{"id", "result", ...}]}`` must name exactly the ids
asked for, each once, with a result of the right kind; anything else (no
answer in time, a non-2xx status, a body that is too large, not JSON or of
another shape) is a :class:`PermissionBackendUnavailable` (503), never an ALLOW.

With ``permission.EXPERIMENTAL_enableBatchedRequests``, ``authorize`` sends one
item per permission with its resource refs as a list, as Backstage does.
"""

from __future__ import annotations

import json
import logging
import time
import typing as t
import uuid

from flask_backstage_auth.bounded_http import CallFailed, LazySession, call
from flask_backstage_auth.errors import (
    AuthenticationError,
    InputError,
    NotAllowedError,
    ServiceUnavailableError,
)
from flask_backstage_auth.permissions.conditions import parse_criteria
from flask_backstage_auth.permissions.model import (
    ALLOW,
    DENY,
    ConditionalPolicyDecision,
    Permission,
    PolicyDecision,
    PolicyQuery,
    QueryDecision,
)

if t.TYPE_CHECKING:  # pragma: no cover
    import requests

    from flask_backstage_auth.credentials import Credentials

logger = logging.getLogger(__name__)

#: The permission backend's plugin id.
PERMISSION_PLUGIN_ID = "permission"
#: Seconds one call may take in all: connecting, the headers and the body.
DEFAULT_TIMEOUT = 5.0
#: The largest answer read.
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
_DEFINITIVE = {"ALLOW": ALLOW, "DENY": DENY}


class PermissionBackendUnavailable(ServiceUnavailableError):
    """503: the permission backend gave no valid answer; nothing is allowed."""


class _Item(t.NamedTuple):
    id: str
    permission: Permission
    refs: tuple[str, ...] | None  # a list of refs (batched), else None
    body: dict[str, t.Any]


class PermissionClient:
    """Asks the permission backend.

    :param base_url: the permission backend's base URL, asked per call
        (``discovery.get_base_url("permission")``).
    :param token: the token to send for credentials (``None``: no header); may
        raise :class:`~flask_backstage_auth.errors.NotAllowedError` or
        :class:`~flask_backstage_auth.errors.AuthenticationError` for
        credentials that cannot be delegated, whose queries are then denied.
    :param batched: ``permission.EXPERIMENTAL_enableBatchedRequests``.
    :param session: the HTTP session (default: one without cookies, made at the first call).
    """

    def __init__(
        self,
        *,
        base_url: t.Callable[[], str],
        token: t.Callable[[Credentials], str | None],
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        batched: bool = False,
        session: requests.Session | None = None,
        monotonic: t.Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = base_url
        self._token = token
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.batched = batched
        self._http = LazySession(session)
        self._monotonic = monotonic

    @property
    def session(self) -> requests.Session:
        """The HTTP session every call uses."""
        return self._http.session

    def authorize(
        self, credentials: Credentials, queries: t.Sequence[PolicyQuery]
    ) -> list[PolicyDecision]:
        """An ALLOW or DENY per query, in order.

        :raises PermissionBackendUnavailable: no valid answer.
        """
        if not queries:
            return []
        if self.batched:
            return self._authorize_batched(credentials, queries)
        items = [_item(query.permission, query.resource_ref) for query in queries]
        answers = self._post(credentials, items)
        if answers is None:
            return [DENY] * len(queries)
        return [_definitive(answers[item.id], item) for item in items]

    def authorize_conditional(
        self, credentials: Credentials, permissions: t.Sequence[Permission]
    ) -> list[QueryDecision]:
        """An ALLOW, DENY or CONDITIONAL per resource permission, in order.

        :raises PermissionBackendUnavailable: no valid answer.
        """
        if not permissions:
            return []
        items = [_item(permission, None) for permission in permissions]
        answers = self._post(credentials, items)
        if answers is None:
            return [DENY] * len(permissions)
        return [_query_decision(answers[item.id], item) for item in items]

    def _authorize_batched(
        self, credentials: Credentials, queries: t.Sequence[PolicyQuery]
    ) -> list[PolicyDecision]:
        # One item per permission (and, unlike Backstage, ref-less queries of a
        # resource permission apart: they never take a resource's result).
        groups: dict[tuple[str, bool], list[int]] = {}
        for index, query in enumerate(queries):
            with_ref = bool(query.permission.resource_type) and query.resource_ref is not None
            groups.setdefault((query.permission.name, with_ref), []).append(index)
        items = []
        for (_, with_ref), indexes in groups.items():
            permission = queries[indexes[0]].permission
            refs = (
                tuple(t.cast(str, queries[i].resource_ref) for i in indexes) if with_ref else None
            )
            items.append(_item(permission, None, refs))
        answers = self._post(credentials, items)
        if answers is None:
            return [DENY] * len(queries)
        decisions: list[PolicyDecision | None] = [None] * len(queries)
        for item, indexes in zip(items, groups.values()):
            result = answers[item.id].get("result")
            if isinstance(result, list):
                if item.refs is None or len(result) != len(item.refs):
                    raise _invalid("a list of results does not match the resourceRefs asked for")
                per_ref = [_definitive({"result": r}, item) for r in result]
            else:
                per_ref = [_definitive(answers[item.id], item)] * len(indexes)
            for index, decision in zip(indexes, per_ref):
                decisions[index] = decision
        return t.cast("list[PolicyDecision]", decisions)

    def _post(
        self, credentials: Credentials, items: t.Sequence[_Item]
    ) -> dict[str, dict[str, t.Any]] | None:
        """The answers by id; ``None`` when the caller cannot be delegated (deny)."""
        try:
            token = self._token(credentials)
        except (AuthenticationError, NotAllowedError) as exc:
            logger.info(
                "Permission denied without asking the permission backend: %s cannot be"
                " delegated to it (%s)",
                credentials.principal.type,
                exc.message,
            )
            return None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = json.dumps({"items": [item.body for item in items]})
        document = self._send(f"{self._base_url()}/authorize", body, headers)
        try:
            answer = json.loads(document)
        except (ValueError, RecursionError):
            raise PermissionBackendUnavailable(
                "Invalid response from the permission backend: not JSON"
            ) from None
        return _answers_by_id(answer, {item.id for item in items})

    def _send(self, url: str, body: str, headers: dict[str, str]) -> bytes:
        try:
            answer = call(
                self.session,
                "POST",
                url,
                data=body.encode(),
                headers=headers,
                timeout=self.timeout,
                max_bytes=self.max_response_bytes,
                read_body=lambda status: 200 <= status < 300,
                monotonic=self._monotonic,
            )
        except CallFailed as exc:
            if exc.reason == "late":
                raise _late() from None
            if exc.reason == "too large":
                raise _too_large() from None
            if exc.reason == "compressed":
                raise _invalid("compressed") from None
            logger.warning("The permission backend could not be reached: %s", exc.cause_name)
            raise PermissionBackendUnavailable(
                "The permission backend could not be reached"
            ) from None
        if not 200 <= answer.status < 300:
            logger.warning("The permission backend answered %s", answer.status)
            raise PermissionBackendUnavailable(f"The permission backend answered {answer.status}")
        return answer.body


def _late() -> PermissionBackendUnavailable:
    logger.warning("The permission backend did not answer in time")
    return PermissionBackendUnavailable("The permission backend did not answer in time")


def _too_large() -> PermissionBackendUnavailable:
    return PermissionBackendUnavailable("Invalid response from the permission backend: too large")


def _invalid(reason: str) -> PermissionBackendUnavailable:
    logger.warning("Invalid response from the permission backend: %s", reason)
    return PermissionBackendUnavailable(f"Invalid response from the permission backend: {reason}")


def _item(permission: Permission, ref: str | None, refs: tuple[str, ...] | None = None) -> _Item:
    item_id = str(uuid.uuid4())
    body: dict[str, t.Any] = {"id": item_id, "permission": permission.to_dict()}
    if ref is not None:
        body["resourceRef"] = ref
    elif refs is not None:
        body["resourceRef"] = list(refs)
    return _Item(item_id, permission, refs, body)


def _answers_by_id(answer: object, ids: set[str]) -> dict[str, dict[str, t.Any]]:
    if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
        raise _invalid("expected {items: [...]}")
    by_id: dict[str, dict[str, t.Any]] = {}
    for item in answer["items"]:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise _invalid("an item without an id")
        if item["id"] in by_id:
            raise _invalid("Items in response do not match request")
        by_id[item["id"]] = item
    if set(by_id) != ids:
        raise _invalid("Items in response do not match request")
    return by_id


def _definitive(answer: t.Mapping[str, t.Any], item: _Item) -> PolicyDecision:
    decision = _DEFINITIVE.get(answer.get("result"))  # type: ignore[arg-type]
    if decision is None:
        raise _invalid(f"expected ALLOW or DENY for {item.permission.name}")
    return decision


def _query_decision(answer: t.Mapping[str, t.Any], item: _Item) -> QueryDecision:
    if answer.get("result") != "CONDITIONAL":
        return _definitive(answer, item)
    permission = item.permission
    plugin_id, resource_type = answer.get("pluginId"), answer.get("resourceType")
    if not isinstance(plugin_id, str) or not isinstance(resource_type, str):
        raise _invalid(
            f"a conditional decision without pluginId or resourceType for {permission.name}"
        )
    if resource_type != permission.resource_type:
        raise _invalid(f"conditions for another resource type than {permission.name}'s")
    try:
        conditions = parse_criteria(answer.get("conditions"))
    except InputError as exc:
        raise _invalid(exc.message) from None
    return ConditionalPolicyDecision(plugin_id, resource_type, conditions)
