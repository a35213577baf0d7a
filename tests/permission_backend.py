"""A permission backend for tests: Backstage's ``/authorize`` contract, in Flask.

What ``@backstage/plugin-permission-backend`` 0.7.18's router does
(``service/router.cjs.js``): the caller's credentials (``user`` or ``none``),
the request schema, the ``resourceRef`` rule for direct user requests, the
policy per item, and a conditional decision with a ``resourceRef`` applied by
the owning plugin's ``apply-conditions`` (``PermissionIntegrationClient``), with
a plugin token on behalf of the caller. ``tamper`` rewrites the answer, to
play a broken backend.
"""

from __future__ import annotations

import json
import time
import typing as t
from dataclasses import dataclass, field

import requests
from flask import Blueprint, Flask, Response, request

from flask_backstage_auth import BackstageAuth
from flask_backstage_auth.errors import InputError

#: ``(permission, user entity ref or None) -> decision`` (a JSON dict).
Policy = t.Callable[[t.Dict[str, t.Any], t.Optional[str]], t.Dict[str, t.Any]]
#: ``(request body, answer) -> (status, body bytes)``.
Tamper = t.Callable[[t.Dict[str, t.Any], t.Dict[str, t.Any]], t.Tuple[int, bytes]]


@dataclass
class Recorder:
    """What the backend saw and how it behaves (one per test)."""

    policy: Policy
    tamper: Tamper | None = None
    delay: float = 0.0
    bodies: list[dict[str, t.Any]] = field(default_factory=list)
    principals: list[dict[str, t.Any]] = field(default_factory=list)
    authorization: list[str | None] = field(default_factory=list)
    applied: list[dict[str, t.Any]] = field(default_factory=list)
    #: The Authorization header of every request that reached the app.
    arrived: list[str | None] = field(default_factory=list)


def _is_resource(permission: dict[str, t.Any]) -> bool:
    return permission.get("type") == "resource"


def _parse(body: object) -> list[dict[str, t.Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise InputError("invalid request")
    for item in body["items"]:
        permission = item.get("permission") if isinstance(item, dict) else None
        if not isinstance(item.get("id"), str) or not isinstance(permission, dict):
            raise InputError("invalid item")
        ref = item.get("resourceRef")
        if permission.get("type") == "basic" and ref is not None:
            raise InputError("basic permission with a resourceRef")
        if ref is not None and not (
            isinstance(ref, str)
            or (isinstance(ref, list) and ref and all(isinstance(r, str) for r in ref))
        ):
            raise InputError("invalid resourceRef")
    return t.cast("list[dict[str, t.Any]]", body["items"])


def create_backend(recorder: Recorder, *, urls: dict[str, str]) -> Flask:
    """The ``permission`` plugin; ``urls`` maps plugin ids to their base URLs."""
    app = Flask("permission-backend", static_folder=None)
    app.config["BACKSTAGE_CONFIG"] = {
        "backend": {"baseUrl": "http://127.0.0.1:1"},
        "discovery": {
            "endpoints": [{"target": url, "plugins": [plugin]} for plugin, url in urls.items()]
        },
    }
    BackstageAuth(app)
    bp = Blueprint("permission", __name__, url_prefix="/api/permission")

    @bp.post("/authorize")
    def authorize() -> Response:
        recorder.authorization.append(request.headers.get("Authorization"))
        state = BackstageAuth.state()
        credentials = state.http_auth("permission").credentials(allow=("user", "none"))
        recorder.principals.append(credentials.principal.to_dict())
        body = request.get_json(silent=True)
        items = _parse(body)
        recorder.bodies.append(t.cast("dict[str, t.Any]", body))
        principal = credentials.principal
        direct_user = principal.type == "user" and principal.actor is None  # type: ignore[union-attr]
        if direct_user and any(
            _is_resource(i["permission"]) and i.get("resourceRef") is None for i in items
        ):
            raise InputError(
                "Resource permissions require a resourceRef to be set. Direct user requests"
                " without a resourceRef are not allowed."
            )
        user = principal.user_entity_ref if principal.type == "user" else None  # type: ignore[union-attr]
        answers = []
        for item in items:
            decision = recorder.policy(item["permission"], user)
            if decision["result"] != "CONDITIONAL" or item.get("resourceRef") is None:
                answers.append({"id": item["id"], **decision})
                continue
            # PermissionIntegrationClient.applyConditions, one item
            target = decision["pluginId"]
            token = (
                state.auth("permission")
                .get_plugin_request_token(on_behalf_of=credentials, target_plugin_id=target)
                .token
            )
            sent = {"items": [{"id": item["id"], "resourceRef": item["resourceRef"], **decision}]}
            reply = requests.post(
                f"{state.discovery.get_base_url(target)}/.well-known/backstage/permissions/apply-conditions",
                json=sent,
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
            reply.raise_for_status()
            recorder.applied.append(reply.json())
            answers.append(reply.json()["items"][0])
        answer = {"items": answers}
        if recorder.delay:
            time.sleep(recorder.delay)
        if recorder.tamper is not None:
            status, data = recorder.tamper(t.cast("dict[str, t.Any]", body), answer)
            return Response(data, status=status, content_type="application/json")
        return Response(json.dumps(answer), content_type="application/json")

    app.register_blueprint(bp)
    inner = app.wsgi_app

    def recording(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        recorder.arrived.append(environ.get("HTTP_AUTHORIZATION"))
        return inner(environ, start_response)

    app.wsgi_app = recording  # type: ignore[method-assign]
    return app
